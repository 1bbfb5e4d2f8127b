"""Engine speed: load time, prompt (prefill) and generation (decode) tokens/s, peak RSS,
for 1 and 2 threads, on the packaged SmolLM2 and on synthetic TinyLlama-1.1B-shaped models
(random weights, Q8_0 / Q4_0 / Q4_K, written with our GGUF writer). One JSON object per
line on stdout. With --peer PYTHON (a Python with llama-cpp-python installed), the same
measurements are taken with llama.cpp on the same files, alternating ours and theirs.

    python benchmarks/bench.py [--models smollm2,gemma3,tinyllama-q4_0,...] [--threads 1,2]
                               [--prompt 128] [--gen 128] [--repeats 3] [--peer /path/to/python]

Decode speed is bounded by memory bandwidth: the ceiling printed beside each figure is
read bandwidth / bytes of weights read per token (all matrices once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import torchless
from torchless.convert import plan_tensors
from torchless.gguf import Value

CACHE = os.path.join(os.environ.get("TORCHLESS_CACHE", os.path.expanduser("~/.cache/torchless")), "bench")


def emit(**r):
    print(json.dumps(r), flush=True)


# ---------------------------------------------------------------- synthetic models

def llama_metadata(s: dict, name: str, context_length: int) -> dict:
    """GGUF metadata of a llama of shape s (dim, hidden, n_layers, n_heads, n_kv_heads, vocab)
    with a byte-fallback SentencePiece-style vocabulary of made-up pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"\u2581t{i}" for i in range(s["vocab"] - len(tokens))]
    types = np.array([2, 3, 3] + [6] * 256 + [1] * (s["vocab"] - 259), np.int32)
    return {
        "general.architecture": "llama", "general.name": name,
        "llama.context_length": Value(context_length, "uint32"), "llama.embedding_length": Value(s["dim"], "uint32"),
        "llama.block_count": Value(s["n_layers"], "uint32"), "llama.feed_forward_length": Value(s["hidden"], "uint32"),
        "llama.attention.head_count": Value(s["n_heads"], "uint32"),
        "llama.attention.head_count_kv": Value(s["n_kv_heads"], "uint32"),
        "llama.attention.layer_norm_rms_epsilon": Value(1e-5, "float32"),
        "llama.rope.freq_base": Value(10000.0, "float32"),
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.linspace(0, -1, s["vocab"], dtype=np.float32),
        "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": Value(1, "uint32"),
        "tokenizer.ggml.eos_token_id": Value(2, "uint32"),
    }


SHAPES = {
    "tinyllama": dict(dim=2048, hidden=5632, n_layers=22, n_heads=32, n_kv_heads=4, vocab=32000),
    "smollm2": dict(dim=576, hidden=1536, n_layers=30, n_heads=9, n_kv_heads=3, vocab=49152, tied=True),
    "7b": dict(dim=4096, hidden=11008, n_layers=32, n_heads=32, n_kv_heads=32, vocab=32000),
    "tiny": dict(dim=512, hidden=1024, n_layers=2, n_heads=8, n_kv_heads=4, vocab=1024),  # a smoke run
}


def write_model(path: str, fmt: str, s: dict) -> int:
    """A llama of shape s in format fmt ("f16", "q8_0", "q4_0", "q4_k_m", ...: every tensor's
    type as llama.cpp's quantize picks it for that mix, torchless.convert.plan_tensors), random
    weights; returns the bytes of weights one decode step reads (every matrix but the embedding,
    plus the head). The weights are slices of one pool of random rows quantized once per dtype
    and width, so writing a 13 GB file takes seconds; contents do not change the speed of a
    memory-bound kernel."""
    hd = s["dim"] // s["n_heads"]
    kv = s["n_kv_heads"] * hd
    md = llama_metadata(s, f"llama shape {fmt} random", 4096)
    shapes = [("token_embd.weight", (s["vocab"], s["dim"])), ("output_norm.weight", (s["dim"],))]
    if not s.get("tied"):
        shapes.append(("output.weight", (s["vocab"], s["dim"])))
    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        shapes += [(p + "attn_norm.weight", (s["dim"],)), (p + "attn_q.weight", (s["dim"], s["dim"])),
                   (p + "attn_k.weight", (kv, s["dim"])), (p + "attn_v.weight", (kv, s["dim"])),
                   (p + "attn_output.weight", (s["dim"], s["dim"])), (p + "ffn_norm.weight", (s["dim"],)),
                   (p + "ffn_gate.weight", (s["hidden"], s["dim"])), (p + "ffn_up.weight", (s["hidden"], s["dim"])),
                   (p + "ffn_down.weight", (s["dim"], s["hidden"]))]
    plans = plan_tensors([(n, "f32", sh) for n, sh in shapes], {k: getattr(v, "value", v) for k, v in md.items()}, fmt)
    rng = np.random.default_rng(0)
    pools: dict[tuple[str, int], np.ndarray] = {}

    def pool(dtype: str, cols: int) -> np.ndarray:
        """Quantized random rows of `cols` columns, as many as the largest tensor has."""
        key = (dtype, cols)
        if key not in pools:
            rows = max(sh[0] for _, sh in shapes if len(sh) == 2 and sh[1] == cols)
            w = rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))
            pools[key] = w if dtype == "f32" else torchless.quantize(w, dtype).reshape(rows, -1)
        return pools[key]

    infos, matrix = [], 0
    for p in plans:
        infos.append((p.name, p.dst, p.shape))
        if len(p.shape) == 2 and (p.name != "token_embd.weight" or s.get("tied")):
            matrix += pool(p.dst, p.shape[1])[: p.shape[0]].nbytes

    def fill(i: int):
        p = plans[i]
        if len(p.shape) == 1:
            return np.ones(p.shape, np.float32)
        rows = pool(p.dst, p.shape[1])
        r0 = int(rng.integers(0, rows.shape[0] - p.shape[0] + 1))
        return np.ascontiguousarray(rows[r0:r0 + p.shape[0]])

    torchless.gguf.write_model(path, md, infos, fill)
    return matrix


def synthetic(shape: str, fmt: str) -> str:
    """The cache's synthetic model of that shape and format, written on first use."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{shape}-{fmt}.gguf")
    if not os.path.exists(path):
        tmp = path + ".tmp"
        write_model(tmp, fmt, SHAPES[shape])
        os.replace(tmp, path)
    return path


def model_path(name: str) -> str:
    if name == "smollm2":
        return torchless.hub.path("smollm2-135m-instruct")
    if name == "gemma3":
        return torchless.hub.path("gemma3-270m")
    shape, _, fmt = name.partition("-")
    if shape in SHAPES and fmt:  # "tinyllama-q4_0", "smollm2-q8_0", "tinyllama-q4_k_m", ...
        return synthetic(shape, fmt)
    raise SystemExit(f"unknown model {name}: smollm2, gemma3 (packaged) or SHAPE-FORMAT, SHAPE one of {', '.join(SHAPES)}")


def matrix_bytes(path: str) -> int:
    """Bytes of weights one decode step reads: every 2-D tensor except the embedding table
    (one row of it), plus the output head (which may be the tied embedding)."""
    with torchless.load(path) as f:
        total = sum(v.nbytes for n, v in f.tensors.items() if len(v.shape) == 2 and n != "token_embd.weight")
        if "output.weight" not in f.tensors:
            total += f.tensors["token_embd.weight"].nbytes
    return total


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's pages from before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def read_bandwidth(threads: int = 1) -> float:
    """Bytes/s reading a 512 MB array once (the maximum of its floats, SIMD in NumPy, which
    releases the GIL: one slice a thread), best of 5."""
    from concurrent.futures import ThreadPoolExecutor
    a = np.ones(512 * 1024 * 1024 // 4, np.float32)
    parts = np.array_split(a, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as ex:
        for _ in range(5):
            t = time.perf_counter()
            list(ex.map(np.max, parts))
            best = max(best, a.nbytes / (time.perf_counter() - t))
    del a, parts
    return best


# ---------------------------------------------------------------- measurements

def ours(path: str, threads: int, n_prompt: int, n_gen: int, more_prompts: tuple = ()) -> dict:
    """Load; a prompt of n_prompt tokens; n_gen tokens generated after it (greedy); then each
    prompt of `more_prompts` on an emptied cache (prompt{n}_tps)."""
    t0 = time.perf_counter()
    m = torchless.Model(path, max_seq_len=max([n_prompt + n_gen, *more_prompts]) + 8, n_threads=threads)
    load = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    ids = [1] + rng.integers(300, m.n_vocab, max([n_prompt, *more_prompts]) - 1).tolist()

    def prompt(n: int):
        # the last position's logits only, as the peer's eval computes them (a 262,144-row head,
        # as Gemma 3's, would otherwise cost more than the rest of the prompt)
        m.reset()
        t0 = time.perf_counter()
        logits = m.forward_batch(ids[:n], list(range(n)), [0] * n, logits=[False] * (n - 1) + [True])
        return logits, time.perf_counter() - t0

    logits, t_prompt = prompt(n_prompt)
    tok = int(np.argmax(logits[-1]))
    t0 = time.perf_counter()
    for i in range(n_gen):
        tok = int(np.argmax(m.forward([tok], start_pos=n_prompt + i)[0]))
    t_gen = time.perf_counter() - t0
    r = dict(load_s=round(load, 3), prompt_tps=round(n_prompt / t_prompt, 1), gen_tps=round(n_gen / t_gen, 2) if n_gen else 0.0)
    for n in more_prompts:
        r[f"prompt{n}_tps"] = round(n / prompt(n)[1], 1)
    r["peak_rss_mb"] = peak_rss_mb()
    return r


PEER_SCRIPT = r"""
import json, sys, time, resource, numpy as np
from llama_cpp import Llama
path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
more = [int(n) for n in sys.argv[5].split(",") if n] if len(sys.argv) > 5 else []
t0 = time.perf_counter()
llm = Llama(model_path=path, n_ctx=max([n_prompt + n_gen] + more) + 8, n_threads=threads, n_threads_batch=threads,
            n_batch=512, verbose=False)
load = time.perf_counter() - t0
rng = np.random.default_rng(1)
ids = [1] + rng.integers(300, llm.n_vocab(), max([n_prompt] + more) - 1).tolist()
def last_logits():  # without logits_all, llama-cpp-python leaves llm.scores unfilled
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
def prompt(n):  # reset: the next eval drops the cache's cells from position 0
    llm.reset(); t0 = time.perf_counter(); llm.eval(ids[:n]); return time.perf_counter() - t0
t_prompt = prompt(n_prompt)
tok = int(np.argmax(last_logits()))
t0 = time.perf_counter()
for i in range(n_gen):
    llm.eval([tok]); tok = int(np.argmax(last_logits()))
t_gen = time.perf_counter() - t0
r = dict(load_s=round(load, 3), prompt_tps=round(n_prompt / t_prompt, 1), gen_tps=round(n_gen / t_gen, 2) if n_gen else 0.0)
for n in more:
    r[f"prompt{n}_tps"] = round(n / prompt(n), 1)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
r["peak_rss_mb"] = round(int(hwm) / 1024, 1)
print(json.dumps(r))
"""


def peer(python: str, path: str, threads: int, n_prompt: int, n_gen: int, more_prompts: tuple = ()) -> dict | None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PEER_SCRIPT)
    try:
        r = subprocess.run([python, f.name, path, str(threads), str(n_prompt), str(n_gen), ",".join(map(str, more_prompts))],
                           capture_output=True, text=True, timeout=1800)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        emit(bench="peer_error", model=path, stderr=r.stderr[-500:])
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours_in_subprocess(path: str, threads: int, n_prompt: int, n_gen: int, more_prompts: tuple = ()) -> dict:
    """Each run in a fresh process, so peak RSS and load time are per run."""
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import bench; "
            f"print(json.dumps(bench.ours({path!r}, {threads}, {n_prompt}, {n_gen}, {tuple(more_prompts)!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,tinyllama-q4_0,tinyllama-q8_0,tinyllama-q4_k")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    default_peer = os.path.join(os.path.dirname(CACHE), "peer-venv", "bin", "python")
    ap.add_argument("--peer", default=default_peer if os.path.exists(default_peer) else None,
                    help="a Python interpreter with llama-cpp-python (default: the cache's peer-venv if present; "
                         "make it with `make peer`)")
    a = ap.parse_args()
    bw = read_bandwidth()
    emit(bench="machine", cpu=open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip(),
         cores=os.cpu_count(), read_gb_s_1thread=round(bw / 1e9, 2), dot_isa=torchless._C.cpu_isa())
    for name in a.models.split(","):
        path = model_path(name)
        weight_bytes = matrix_bytes(path)
        for threads in [int(t) for t in a.threads.split(",")]:
            runs, peer_runs = [], []
            for _ in range(a.repeats):  # alternate ours and the peer's
                runs.append(ours_in_subprocess(path, threads, a.prompt, a.gen))
                if a.peer:
                    p = peer(a.peer, path, threads, a.prompt, a.gen)
                    if p:
                        peer_runs.append(p)
                emit(bench="run", model=name, threads=threads, ours=runs[-1], peer=peer_runs[-1] if a.peer and p else None)
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rec = dict(bench="engine", model=name, file_mb=round(os.path.getsize(path) / 2**20, 1), threads=threads,
                       prompt_tokens=a.prompt, gen_tokens=a.gen, weight_mb_per_token=round(weight_bytes / 2**20, 1),
                       ceiling_gen_tps_1thread_bw=round(bw / weight_bytes, 1), ours=med, runs=len(runs))
            if peer_runs:
                rec["peer"] = {k: statistics.median(r[k] for r in peer_runs) for k in peer_runs[0]}
                rec["gen_ratio"] = round(med["gen_tps"] / rec["peer"]["gen_tps"], 2)
                rec["prompt_ratio"] = round(med["prompt_tps"] / rec["peer"]["prompt_tps"], 2)
            emit(**rec)


if __name__ == "__main__":
    main()
