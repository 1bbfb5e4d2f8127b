"""``python -m torchless ...`` is the ``torchless`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
