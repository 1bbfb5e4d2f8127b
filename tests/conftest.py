"""Shared test fixtures: the per-run seed, the fixture files, the packaged models."""

import os
import secrets
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# the shared fixtures beside the checkout (TORCHLESS_FIXTURES elsewhere, e.g. on a GPU machine)
FIXTURES = Path(os.environ.get("TORCHLESS_FIXTURES", REPO.parent / "shared" / "fixtures"))
BROKEN = REPO / "tests" / "data" / "broken"

# One seed per run, printed so a failure can be replayed with TORCHLESS_SEED=<seed>.
SEED = int(os.environ.get("TORCHLESS_SEED", secrets.randbelow(2**32)))


def pytest_report_header(config):
    from torchless import _C

    return f"torchless: random seed {SEED} (replay with TORCHLESS_SEED={SEED}), CPU kernels {_C.cpu_isa()}"


@pytest.fixture
def seed(request):
    """This test's seed: the run's seed mixed with the test's name, printed."""
    s = (SEED + sum(map(ord, request.node.name)) * 7919) % 2**32
    print(f"seed {s} (run seed {SEED})")
    return s


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


def _model(name):
    from torchless import hub

    try:
        return hub.path(name)
    except Exception as e:  # the Makefile fetches the models before the tests
        pytest.fail(f"packaged model {name} is not available: {e} (run `make models`)")


@pytest.fixture(scope="session")
def smollm2_path():
    return _model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_path():
    return _model("gemma3-270m")


@pytest.fixture(scope="session")
def fixtures():
    assert FIXTURES.is_dir(), f"shared fixtures not found at {FIXTURES}"
    return FIXTURES
