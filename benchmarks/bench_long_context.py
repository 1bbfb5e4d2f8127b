"""Generation speed at a long context against an empty one, and the prefill that fills it.
One JSON object per model on stdout.

    python benchmarks/bench_long_context.py [--models smollm2,tinyllama-q4_0] [--threads 2] [--context 2048]
        [--steps 16] [--rounds 1] [--kv f16|q8_0|f32]

Each model: prefill `--context` random tokens in chunks of 256 (sequence 0) and 8 tokens in a
second sequence; then `--rounds` rounds of `--steps` single-token decodes of the short sequence
(speed at an empty context) and as many of the long one (speed at that context), alternated so
that a disturbance of the shared machine falls on both; the medians of the rounds. F16 KV cache
unless --kv says otherwise. The issue-6 target is a loss of at most 15% at 2,048 tokens on the
TinyLlama shape.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import model_path  # noqa: E402  (the same model files as bench.py)

import torchless  # noqa: E402


def decode_tps(m: torchless.Model, start: int, n: int, seq: int) -> float:
    t = time.perf_counter()
    for i in range(start, start + n):
        m.forward([5], i, seq)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,tinyllama-q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--kv", default="f16", help="the KV cache's dtype: f16, q8_0 or f32")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    for name in a.models.split(","):
        path = model_path(name)
        m = torchless.Model(path, n_threads=a.threads, max_seq_len=a.context + a.steps * a.rounds + 64, max_batch_size=2,
                            kv_dtype=a.kv)
        n_vocab = m.config["n_vocab"]
        toks = [int(t) for t in rng.integers(0, min(n_vocab, 30000), a.context)]
        t = time.perf_counter()
        for s in range(0, a.context, 256):
            m.forward(toks[s:s + 256], s, 0)
        prefill = time.perf_counter() - t
        m.forward([1] * 8, 0, 1)
        shorts, longs = [], []
        for r in range(a.rounds):
            shorts.append(decode_tps(m, 8 + r * a.steps, a.steps, 1))
            longs.append(decode_tps(m, a.context + r * a.steps, a.steps, 0))
        short, long = float(np.median(shorts)), float(np.median(longs))
        print(json.dumps({"bench": "long_context", "model": name, "threads": a.threads, "context": a.context, "kv": a.kv,
                          "gen_tps_empty": round(short, 2), "gen_tps_at_context": round(long, 2),
                          "loss": round(1 - long / short, 3), "prefill_s": round(prefill, 2),
                          "prefill_tps": round(a.context / prefill, 1)}), flush=True)


if __name__ == "__main__":
    main()
