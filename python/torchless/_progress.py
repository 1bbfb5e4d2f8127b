"""Progress on stderr for long jobs (hub downloads and extraction, convert), one class for both:
a tqdm bar when tqdm is installed and stderr is a terminal; otherwise a `\\r`-updated line on a
terminal, and one line per quarter elsewhere (logs stay short). Silent when disabled."""

from __future__ import annotations

import sys
from typing import Callable


def stderr_isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """`line(done, total, note)` formats the plain-text line; `tqdm_args` are passed to tqdm
    (unit, unit_scale, desc). On close a terminal line is cleared (`clear=True`) or ended."""

    def __init__(self, enabled: bool, total: int, line: Callable[[int, int, str], str], *, prefix: str,
                 clear: bool = False, **tqdm_args: object) -> None:
        self.enabled, self.total, self.done = enabled, total, 0
        self._line, self._prefix, self._clear = line, prefix, clear
        self._tty = enabled and stderr_isatty()
        self._last = -1
        self._bar = None
        if self._tty:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, leave=False, **tqdm_args)

    def message(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"{self._prefix}: {text}\n")
            sys.stderr.flush()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
            return
        pct = 100 * self.done // self.total if self.total else 100
        step = pct if self._tty else pct // 25
        if step == self._last:
            return
        self._last = step
        line = f"{self._prefix}: {self._line(self.done, self.total, note)}"
        sys.stderr.write((f"\r{line}\x1b[K" if self._clear else f"\r{line}") if self._tty else f"{line}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._tty and self._last >= 0:
            sys.stderr.write("\r\x1b[K" if self._clear else "\n")
            sys.stderr.flush()
        self._last = -1
