"""File-layer speed: opening a model and reading its metadata, and dequantization
throughput per dtype. Prints one JSON object per measurement on stdout.

    python benchmarks/bench_files.py [--model gemma3-270m] [--repeats 20] [--elements 8388608]

Dequantization is scalar C today (SIMD comes with the CPU-speed issue); the memory
bandwidth figure beside it is a NumPy copy of the same number of bytes (read + write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

import torchless


def emit(**record):
    print(json.dumps(record), flush=True)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_open(model: str, repeats: int) -> None:
    path = torchless.hub.resolve(model)

    def open_only():
        torchless.load(path).close()

    def open_and_read_metadata():
        with torchless.load(path) as f:
            md = f.metadata
            _ = len(md), f.metadata_types, [v.shape for v in f.tensors.values()]

    def open_and_decode_every_string():
        with torchless.load(path) as f:
            _ = [v.tolist() if isinstance(v, torchless.StringArray) else v for v in f.metadata.values()]

    def gguf_package_reader():  # the peer: llama.cpp's own Python reader (NumPy memmap)
        import gguf

        gguf.GGUFReader(path)

    runs = [("open", open_only), ("open+all_metadata+tensor_table", open_and_read_metadata),
            ("open+all_metadata+every_string_decoded", open_and_decode_every_string)]
    try:
        import gguf  # noqa: F401

        runs.append(("peer:gguf.GGUFReader(path)", gguf_package_reader))
    except ImportError:
        pass
    for name, fn in runs:
        fn()  # page cache warm: this measures our work, not the disk
        t = timed(fn, repeats if not name.startswith("peer") else 3)
        emit(bench="file_open", what=name, model=model, file_bytes=os.path.getsize(path),
             median_ms=round(statistics.median(t) * 1e3, 2), min_ms=round(min(t) * 1e3, 2), repeats=len(t))


def bench_dequant(n: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n // 4096, 4096)).astype(np.float32)
    out_bytes = x.nbytes
    # ceiling: NumPy copy of an array of the output's size (reads + writes that many bytes)
    dst = np.empty_like(x)
    copy_t = min(timed(lambda: np.copyto(dst, x), repeats))
    emit(bench="memcpy_ceiling", bytes=out_bytes, gb_s=round(2 * out_bytes / copy_t / 1e9, 2))
    for dtype in ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k",
                  "q5_k", "q6_k", "q8_k", "tq1_0", "tq2_0"]:
        raw = torchless.quantize(x, dtype)
        # into one preallocated array: the kernel, not the page faults of a fresh 32 MB array
        t = min(timed(lambda: torchless.dequantize(raw, dtype, x.shape, out=dst), repeats))
        emit(bench="dequantize", dtype=dtype, elements=x.size, in_bytes=raw.nbytes,
             melem_s=round(x.size / t / 1e6, 1), in_gb_s=round(raw.nbytes / t / 1e9, 3),
             out_gb_s=round(out_bytes / t / 1e9, 3), threads=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--elements", type=int, default=8 * 1024 * 1024)
    a = p.parse_args()
    emit(bench="machine", cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(),
         torchless=torchless.__version__)
    bench_open(a.model, a.repeats)
    bench_dequant(a.elements, max(3, a.repeats // 4))


if __name__ == "__main__":
    main()
