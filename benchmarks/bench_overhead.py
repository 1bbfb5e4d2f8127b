"""Python-layer overhead (issue 4): a decode step through `Transformer.forward` against the same
step through the extension (`torchless._C.Model.forward`, a direct call into tl_forward), and
`Model.stream` (one GIL round trip per token) against the C loop (`Generation.run()`, the GIL
released for the whole generation). JSON lines on stdout.

    python benchmarks/bench_overhead.py [--model smollm2-135m-instruct] [--steps 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import torchless
from torchless import _C


def emit(**r):
    print(json.dumps(r), flush=True)


def decode_steps(fn, steps: int) -> float:
    t = time.perf_counter()
    for i in range(steps):
        fn(i)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="stories260K,smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    for name in a.models.split(","):
        path = (torchless.hub.resolve(name) if name != "stories260K"
                else str(__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "fixtures"
                         / "stories260K" / "stories260K.derived-f32.gguf"))
        t = torchless.Transformer.from_pretrained(path, max_seq_len=a.steps + 8, n_threads=a.threads)
        m = t.model
        ext, py = [], []
        for _ in range(a.repeats):  # alternate the two paths
            m.reset()
            m.forward([1])
            ext.append(decode_steps(lambda i: _C.Model.forward(m, [5], start_pos=1 + i), a.steps))
            m.reset()
            t.forward([[1]])
            py.append(decode_steps(lambda i: t.forward([[5]], start_pos=1 + i), a.steps))
        e, p = statistics.median(ext), statistics.median(py)
        emit(bench="decode_step_overhead", model=name, threads=a.threads, extension_us=round(e * 1e6, 1),
             transformer_forward_us=round(p * 1e6, 1), overhead_pct=round(100 * (p - e) / e, 2))
        c_loop, stream = [], []
        n = a.steps
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            _, produced, _ = m._iter([1], max_new_tokens=n, temperature=0.0, ignore_eog=True).run()
            c_loop.append(produced / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            produced = sum(1 for _ in m.steps([1], max_new_tokens=n, temperature=0.0, ignore_eog=True))
            stream.append(produced / (time.perf_counter() - t0))
        cl, st = statistics.median(c_loop), statistics.median(stream)
        emit(bench="stream_vs_c_loop", model=name, threads=a.threads, tokens=n, c_loop_tps=round(cl, 1),
             stream_tps=round(st, 1), stream_fraction=round(st / cl, 4))


if __name__ == "__main__":
    main()
