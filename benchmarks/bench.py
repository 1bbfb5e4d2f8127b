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
from torchless.gguf import Value

CACHE = os.path.join(os.environ.get("TORCHLESS_CACHE", os.path.expanduser("~/.cache/torchless")), "bench")
TINYLLAMA = dict(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden=5632, vocab=32000)


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


def synthetic_tinyllama(dtype: str) -> str:
    """A TinyLlama-1.1B-shaped llama GGUF with random weights (cached by dtype)."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"tinyllama-shape-{dtype}.gguf")
    if os.path.exists(path):
        return path
    s = TINYLLAMA
    rng = np.random.default_rng(0)
    md = llama_metadata(s, "tinyllama-shape random", 2048)
    head_dim = s["dim"] // s["n_heads"]

    def mat(rows, cols, qtype):
        w = (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)
        return (qtype, torchless.quantize(w, qtype), (rows, cols))

    t = {"token_embd.weight": mat(s["vocab"], s["dim"], dtype), "output_norm.weight": np.ones(s["dim"], np.float32),
         "output.weight": mat(s["vocab"], s["dim"], "q6_k" if dtype == "q4_k" else dtype)}
    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        t[p + "attn_norm.weight"] = np.ones(s["dim"], np.float32)
        t[p + "attn_q.weight"] = mat(s["dim"], s["dim"], dtype)
        t[p + "attn_k.weight"] = mat(s["n_kv_heads"] * head_dim, s["dim"], dtype)
        t[p + "attn_v.weight"] = mat(s["n_kv_heads"] * head_dim, s["dim"], dtype)
        t[p + "attn_output.weight"] = mat(s["dim"], s["dim"], dtype)
        t[p + "ffn_norm.weight"] = np.ones(s["dim"], np.float32)
        t[p + "ffn_gate.weight"] = mat(s["hidden"], s["dim"], dtype)
        t[p + "ffn_up.weight"] = mat(s["hidden"], s["dim"], dtype)
        t[p + "ffn_down.weight"] = mat(s["dim"], s["hidden"], dtype)
    tmp = path + ".tmp"
    torchless.gguf.write(tmp, md, t)
    os.replace(tmp, path)
    return path


def model_path(name: str) -> str:
    if name == "smollm2":
        return torchless.hub.path("smollm2-135m-instruct")
    if name == "gemma3":
        return torchless.hub.path("gemma3-270m")
    if name.startswith("tinyllama-"):
        return synthetic_tinyllama(name.split("-", 1)[1])
    raise SystemExit(f"unknown model {name}")


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


def read_bandwidth() -> float:
    """Bytes/s reading a 512 MB array once (NumPy sum, one thread), best of 5."""
    a = np.ones(512 * 1024 * 1024 // 8, np.int64)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t))
    del a
    return best


# ---------------------------------------------------------------- measurements

def ours(path: str, threads: int, n_prompt: int, n_gen: int) -> dict:
    t0 = time.perf_counter()
    m = torchless.Model(path, max_seq_len=n_prompt + n_gen + 8, n_threads=threads)
    load = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    prompt = [1] + rng.integers(300, m.n_vocab, n_prompt - 1).tolist()
    # the last position's logits only, as the peer's eval computes them (a 262,144-row head, as
    # Gemma 3's, would otherwise cost more than the rest of the prompt)
    n = len(prompt)
    t0 = time.perf_counter()
    logits = m.forward_batch(prompt, list(range(n)), [0] * n, logits=[False] * (n - 1) + [True])
    t_prompt = time.perf_counter() - t0
    tok = int(np.argmax(logits[-1]))
    t0 = time.perf_counter()
    for i in range(n_gen):
        tok = int(np.argmax(m.forward([tok], start_pos=n_prompt + i)[0]))
    t_gen = time.perf_counter() - t0
    return dict(load_s=round(load, 3), prompt_tps=round(n_prompt / t_prompt, 1), gen_tps=round(n_gen / t_gen, 2),
                peak_rss_mb=peak_rss_mb())


PEER_SCRIPT = r"""
import json, sys, time, resource, numpy as np
from llama_cpp import Llama
path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
llm = Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_threads=threads, n_threads_batch=threads,
            n_batch=512, verbose=False)
load = time.perf_counter() - t0
rng = np.random.default_rng(1)
prompt = [1] + rng.integers(300, llm.n_vocab(), n_prompt - 1).tolist()
def last_logits():  # without logits_all, llama-cpp-python leaves llm.scores unfilled
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
t0 = time.perf_counter(); llm.eval(prompt); t_prompt = time.perf_counter() - t0
tok = int(np.argmax(last_logits()))
t0 = time.perf_counter()
for i in range(n_gen):
    llm.eval([tok]); tok = int(np.argmax(last_logits()))
t_gen = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps(dict(load_s=round(load, 3), prompt_tps=round(n_prompt / t_prompt, 1), gen_tps=round(n_gen / t_gen, 2),
                      peak_rss_mb=round(int(hwm) / 1024, 1))))
"""


def peer(python: str, path: str, threads: int, n_prompt: int, n_gen: int) -> dict | None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PEER_SCRIPT)
    try:
        r = subprocess.run([python, f.name, path, str(threads), str(n_prompt), str(n_gen)], capture_output=True,
                           text=True, timeout=1800)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        emit(bench="peer_error", model=path, stderr=r.stderr[-500:])
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours_in_subprocess(path: str, threads: int, n_prompt: int, n_gen: int) -> dict:
    """Each run in a fresh process, so peak RSS and load time are per run."""
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import bench; "
            f"print(json.dumps(bench.ours({path!r}, {threads}, {n_prompt}, {n_gen})))")
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
