"""TORCHLESS_CPU picks the kernel level once per process, and cpu_isa() (`torchless info`'s
cpu_kernels) reports the level actually used: one the CPU has is honoured, one it lacks falls
back to the detected level, and an unknown value is ignored with a warning, never a crash.
What the CPU has is read from /proc/cpuinfo, independently of the library's CPUID/HWCAP code."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

LEVELS = ("scalar", "avx2", "avx512", "neon")


def levels_of_this_cpu():
    """The dispatch levels this CPU has, best last (cpu.h's requirements for each)."""
    machine = platform.machine()
    if machine in ("aarch64", "arm64"):
        return ["scalar", "neon"]
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    have = ["scalar"]
    if {"avx2", "fma", "f16c"} <= flags:
        have.append("avx2")
        if {"avx512f", "avx512bw", "avx512vl"} <= flags:
            have.append("avx512")
    return have


def level_run(value):
    """(level reported, stderr) of a fresh process with TORCHLESS_CPU=value (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHLESS_CPU"}
    if value is not None:
        env["TORCHLESS_CPU"] = value
    r = subprocess.run([sys.executable, "-c", "from torchless import _C; print(_C.cpu_isa())"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip(), r.stderr


def test_unset_runs_the_best_level_the_cpu_has():
    assert level_run(None) == (levels_of_this_cpu()[-1], "")


@pytest.mark.parametrize("level", LEVELS)
def test_torchless_cpu_runs_that_level_if_the_cpu_has_it_else_the_detected_one(level):
    have = levels_of_this_cpu()
    assert level_run(level) == (level if level in have else have[-1], "")


@pytest.mark.parametrize("value", ["avx9", "AVX2", "native"])
def test_an_unknown_value_is_ignored_with_a_warning(value):
    got, err = level_run(value)
    assert got == levels_of_this_cpu()[-1]
    assert f"TORCHLESS_CPU={value} is not scalar, avx2, avx512 or neon; ignored" in err


def test_an_empty_value_is_unset():
    assert level_run("") == (levels_of_this_cpu()[-1], "")
