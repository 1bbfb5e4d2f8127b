"""The host sampler's cost a token: `tl_sampler_sample` with the llama.cpp defaults (top_k 40,
top_p 0.95, min_p 0.05, temperature 0.8) and the raw logprob the generation loop always asks
for, on random logits of Gemma 3's, SmolLM2's and LLaMA-2's vocabularies. It is what a CPU run
pays every token, and what a GPU run pays besides the download when it brings the rows to the
host (TORCHLESS_DEVICE_SAMPLING=0, or top_k 0). JSON lines.

    python benchmarks/bench_sampler.py [--vocab 262144,49152,32000] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from torchless import _C


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", default="262144,49152,32000")
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    for n_vocab in (int(v) for v in a.vocab.split(",")):
        logits = (rng.standard_normal(n_vocab) * 3).astype(np.float32)
        s = _C.Sampler(n_vocab, seed=1)
        s.sample(logits)  # warm-up
        best = float("inf")
        for _ in range(5):  # the best of five runs of `repeats` samples
            t = time.perf_counter()
            for _ in range(a.repeats):
                s.sample(logits)
            best = min(best, (time.perf_counter() - t) / a.repeats)
        print(json.dumps(dict(n_vocab=n_vocab, us_per_sample=round(1e6 * best, 1), cpu=_C.cpu_isa())), flush=True)


if __name__ == "__main__":
    main()
