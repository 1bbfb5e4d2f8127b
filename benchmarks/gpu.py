"""GPU speed: a LLaMA-2-7B-shaped model in each format (random weights, written with our GGUF
writer), prompt processing, generation, time to first token and batched decoding on one
device, with the memory-bandwidth ceiling beside each figure; and the C generation loop
(top_k 40 sampling) with the sampling candidates picked on the device (loop_tps) and with
every row of logits downloaded instead (loop_host_tps, TORCHLESS_DEVICE_SAMPLING=0). JSON lines
on stdout, a table last.

    python benchmarks/gpu.py [--device cuda] [--formats f16,q8_0,q4_0,q4_k_m] [--prompt 512]
                             [--gen 128] [--batches 8,32] [--dir /tmp] [--shape 7b|tiny]
                             [--vocab 262144]

The models are bench.py's synthetic ones (write_model: llama.cpp's mix for each format).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import torchless
from bench import SHAPES, emit, write_model  # benchmarks/ is this script's folder


def copy_bandwidth() -> float | None:
    """Device-to-device copy, bytes read + written per second (torch, where installed)."""
    try:
        import torch
    except ImportError:
        return None
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        b.copy_(a)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    del a, b
    torch.cuda.empty_cache()
    return 2 * (1 << 30) / statistics.median(times)


def measure(path: str, device: str, n_prompt: int, n_gen: int, batches: list[int], repeats: int) -> dict:
    t0 = time.perf_counter()
    m = torchless.Model(path, max_seq_len=max(n_prompt + n_gen, 17 + 32) + 8, max_batch_size=max(batches + [1]), device=device)
    load = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    prompt = [1] + rng.integers(300, m.n_vocab, n_prompt - 1).tolist()
    pos, seq, last = list(range(n_prompt)), [0] * n_prompt, [False] * (n_prompt - 1) + [True]

    def prefill():
        m.reset()
        return m.forward_batch(prompt, pos, seq, logits=last)

    prefill()  # warm-up: kernels loaded, scratch sized
    t_prompt, ttft = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        logits = prefill()
        t_prompt.append(time.perf_counter() - t)
        m.forward([int(np.argmax(logits[-1]))], start_pos=n_prompt)
        ttft.append(time.perf_counter() - t)
    t_gen = []
    for _ in range(max(1, repeats // 2)):
        logits = prefill()
        tok = int(np.argmax(logits[-1]))
        t = time.perf_counter()
        for i in range(n_gen):
            tok = int(np.argmax(m.forward([tok], start_pos=n_prompt + i)[0]))
        t_gen.append(time.perf_counter() - t)
    out = dict(load_s=round(load, 2), prompt_tps=round(n_prompt / statistics.median(t_prompt), 1),
               ttft_ms=round(1e3 * statistics.median(ttft), 2), gen_tps=round(n_gen / statistics.median(t_gen), 1))
    for b in batches:  # b sequences decoding together after a short prompt each
        m.reset()
        for sq in range(b):
            m.forward(prompt[:16], 0, sq)
        toks = [1] * b
        steps = 32
        lg = m.forward_batch(toks, [16] * b, list(range(b)), logits=[True] * b)  # warm-up: this shape recorded
        toks = [int(x) for x in np.argmax(lg, axis=-1)]
        t = time.perf_counter()
        for i in range(steps):
            lg = m.forward_batch(toks, [17 + i] * b, list(range(b)), logits=[True] * b)
            toks = [int(x) for x in np.argmax(lg, axis=-1)]
        out[f"batch{b}_tps"] = round(b * steps / (time.perf_counter() - t), 1)

    def loop(on_device: bool) -> float:
        """tokens/s of the C generation loop after its first token (the prompt's)"""
        os.environ["TORCHLESS_DEVICE_SAMPLING"] = "1" if on_device else "0"
        try:
            steps = m.steps(prompt, max_new_tokens=n_gen + 1, temperature=0.8, top_k=40, seed=1, ignore_eog=True)
            next(steps)
            t = time.perf_counter()
            n = sum(1 for _ in steps)
            return n / (time.perf_counter() - t)
        finally:
            del os.environ["TORCHLESS_DEVICE_SAMPLING"]

    for key, on_device in [("loop_tps", True), ("loop_host_tps", False)] * 2:  # alternating; the second of each kept
        out[key] = round(loop(on_device), 1)
    del m
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--formats", default="f16,q8_0,q4_0,q4_k_m")
    ap.add_argument("--shape", default="7b", choices=SHAPES)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=0, help="the vocabulary instead of the shape's (Gemma 3: 262144)")
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the model files")
    a = ap.parse_args()
    s = dict(SHAPES[a.shape])
    if a.vocab:
        s["vocab"] = a.vocab
    batches = [int(b) for b in a.batches.split(",") if b]
    devs = {f"{d['backend']}:{d['index']}": d for d in torchless.backends()}
    dev = devs.get(a.device if ":" in a.device else a.device + ":0")
    bw = copy_bandwidth() if a.device.startswith("cuda") else None
    emit(kind="device", device=a.device, name=dev and dev["name"], copy_gbs=bw and round(bw / 1e9, 1))
    rows = []
    for fmt in a.formats.split(","):
        path = os.path.join(a.dir, f"llama-{a.shape}-{fmt}.gguf")
        t = time.perf_counter()
        weight_bytes = write_model(path, fmt, s)
        write_s = time.perf_counter() - t
        try:
            r = measure(path, a.device, a.prompt, a.gen, batches, a.repeats)
        finally:
            if not a.keep:
                os.unlink(path)
        ceiling = bw / weight_bytes if bw else None  # read-only stream: copy rate counts read + write
        r.update(kind="model", shape=a.shape, vocab=s["vocab"], format=fmt, weight_gb=round(weight_bytes / 1e9, 2), write_s=round(write_s, 1),
                 ceiling_tps=ceiling and round(ceiling, 1), gen_over_ceiling=ceiling and round(r["gen_tps"] / ceiling, 2))
        emit(**r)
        rows.append(r)
    print(f"\n{a.shape} shape on {dev and dev['name']} (copy {bw and round(bw / 1e9)} GB/s read+write)")
    cols = ["format", "weight_gb", "prompt_tps", "ttft_ms", "gen_tps", "ceiling_tps", "gen_over_ceiling", "loop_tps",
            "loop_host_tps"]
    cols += [f"batch{b}_tps" for b in batches]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")


if __name__ == "__main__":
    main()
