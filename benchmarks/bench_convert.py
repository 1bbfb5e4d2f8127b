"""Convert speed and memory: time and peak RSS of `torchless.convert` in a child process.
Prints one JSON object per run on stdout.

    python benchmarks/bench_convert.py SRC [--types q8_0,q4_k_m] [--threads 2] [--repeats 1]
    python benchmarks/bench_convert.py --synthesize /tmp/synth-f32.gguf [--layers 6] ...   # make SRC first
    python benchmarks/bench_convert.py --synthesize-hf /tmp/qwen05b-bf16 --types q4_k_m   # a 0.5B BF16 HF folder

SRC is anything `torchless.load` opens (a GGUF file, a catalog name; an HF folder or .bin once
those readers are in). Each conversion runs in a fresh `python -c` child, whose peak RSS is its
own `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end.
The memory target beside it: 1.5 x the largest tensor as float32 + that tensor's output.

`--synthesize PATH` writes a random LLaMA-shaped F32 GGUF (dim 1024, FFN 2816, vocab 32000,
untied head: ~135 MB per 32000 x 1024 matrix, ~600 MB with 6 layers) with convert's own streaming
writer, so making it does not need the whole model in memory either; it is not a model file to
commit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def emit(**record):
    print(json.dumps(record), flush=True)


def synthesize(path: str, layers: int, dim: int = 1024, hidden: int = 2816, vocab: int = 32000, seed: int = 0) -> None:
    from torchless import gguf as tgguf  # noqa: F401  (Value types)

    conv = _convert_module()
    heads, kv_heads = 16, 4
    head_dim = dim // heads
    shapes = [("token_embd.weight", (vocab, dim))]
    for l in range(layers):
        p = f"blk.{l}."
        shapes += [(p + "attn_norm.weight", (dim,)), (p + "attn_q.weight", (dim, dim)),
                   (p + "attn_k.weight", (kv_heads * head_dim, dim)), (p + "attn_v.weight", (kv_heads * head_dim, dim)),
                   (p + "attn_output.weight", (dim, dim)), (p + "ffn_norm.weight", (dim,)),
                   (p + "ffn_gate.weight", (hidden, dim)), (p + "ffn_up.weight", (hidden, dim)),
                   (p + "ffn_down.weight", (dim, hidden))]
    shapes += [("output_norm.weight", (dim,)), ("output.weight", (vocab, dim))]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(vocab - len(tokens))]
    kvs = [("general.architecture", "string", "llama"), ("general.name", "string", "synthetic-f32"),
           ("general.file_type", "uint32", 0), ("llama.context_length", "uint32", 2048),
           ("llama.embedding_length", "uint32", dim), ("llama.block_count", "uint32", layers),
           ("llama.feed_forward_length", "uint32", hidden), ("llama.attention.head_count", "uint32", heads),
           ("llama.attention.head_count_kv", "uint32", kv_heads), ("llama.rope.dimension_count", "uint32", head_dim),
           ("llama.attention.layer_norm_rms_epsilon", "float32", 1e-5), ("tokenizer.ggml.model", "string", "llama"),
           ("tokenizer.ggml.tokens", "array[string]", tokens),
           ("tokenizer.ggml.scores", "array[float32]", np.zeros(vocab, np.float32)),
           ("tokenizer.ggml.token_type", "array[int32]", np.ones(vocab, np.int32)),
           ("tokenizer.ggml.bos_token_id", "uint32", 1), ("tokenizer.ggml.eos_token_id", "uint32", 2)]
    rng = np.random.default_rng(seed)

    def fill(i):
        name, shape = shapes[i]
        if len(shape) == 1:
            yield np.ones(shape, np.float32)
            return
        rows, cols = shape
        step = max(1, (1 << 22) // cols)
        for r in range(0, rows, step):
            n = min(step, rows - r)
            yield (rng.standard_normal((n, cols), dtype=np.float32) / np.float32(math.sqrt(cols)))

    conv._write_streaming(path, kvs, [(n, "f32", s) for n, s in shapes], fill)


def synthesize_hf(folder: str, seed: int = 0) -> None:
    """A random Qwen2.5-0.5B-shaped Hugging Face folder in BF16 (494M parameters, ~0.99 GB):
    config.json and one model.safetensors written tensor by tensor (the header first, as the
    sizes are known), no tokenizer (convert carries none then)."""
    dim, layers, heads, kv_heads, hidden, vocab = 896, 24, 14, 2, 4864, 151936
    hd = dim // heads
    os.makedirs(folder, exist_ok=True)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": dim,
              "intermediate_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "rope_theta": 1000000.0, "vocab_size": vocab, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shapes = [("model.embed_tokens.weight", (vocab, dim))]
    for l in range(layers):
        p = f"model.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (dim,)), (p + "self_attn.q_proj.weight", (heads * hd, dim)),
                   (p + "self_attn.q_proj.bias", (heads * hd,)), (p + "self_attn.k_proj.weight", (kv_heads * hd, dim)),
                   (p + "self_attn.k_proj.bias", (kv_heads * hd,)), (p + "self_attn.v_proj.weight", (kv_heads * hd, dim)),
                   (p + "self_attn.v_proj.bias", (kv_heads * hd,)), (p + "self_attn.o_proj.weight", (dim, heads * hd)),
                   (p + "post_attention_layernorm.weight", (dim,)), (p + "mlp.gate_proj.weight", (hidden, dim)),
                   (p + "mlp.up_proj.weight", (hidden, dim)), (p + "mlp.down_proj.weight", (dim, hidden))]
    shapes.append(("model.norm.weight", (dim,)))
    header, off = {}, 0
    for name, shape in shapes:
        n = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(seed)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for name, shape in shapes:
            rows = shape[0] if len(shape) == 2 else 1
            cols = shape[-1]
            step = max(1, (1 << 22) // cols)
            for r in range(0, rows, step):
                n = min(step, rows - r)
                x = rng.standard_normal((n, cols), dtype=np.float32) / np.float32(math.sqrt(cols))
                if len(shape) == 1:
                    x = 1 + 0.1 * x
                f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())  # BF16 by truncation


def _convert_module():
    import torchless  # noqa: F401

    return sys.modules["torchless.convert"]


CHILD = """
import json, resource, sys, time, torchless
t0 = time.perf_counter()
r = torchless.convert(sys.argv[1], sys.argv[2], sys.argv[3], progress=False, n_threads=int(sys.argv[4]))
print(json.dumps({"seconds": time.perf_counter() - t0, "n_tensors": r.n_tensors, "bytes_in": r.bytes_in,
                  "bytes_out": r.bytes_out, "bpw_out": r.bpw_out, "fallbacks": r.fallbacks,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def largest_tensor(src: str, mix: str) -> tuple[int, int]:
    """(elements, output bytes) of the largest tensor."""
    import torchless

    conv = _convert_module()
    with torchless.load(src) as f:
        plans = conv.plan_tensors([(n, f.tensors[n].dtype, f.tensors[n].shape) for n in f.tensors], f.metadata, mix)
    big = max(plans, key=lambda p: p.n_elements)
    return big.n_elements, big.nbytes


def run_child(src: str, dst: str, mix: str, threads: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, src, dst, mix, str(threads)], capture_output=True, text=True,
                       timeout=3600)
    if r.returncode:
        raise RuntimeError(f"convert failed: {r.stderr.strip()}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["peak_rss_mib"] = round(out.pop("maxrss_kib") / 1024, 1)   # the child's own getrusage at its end
    return out


def baseline_rss_mib() -> float:
    """Peak RSS of a child that only imports torchless (the interpreter + NumPy + extension)."""
    r = subprocess.run([sys.executable, "-c", "import resource, torchless; "
                        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                       capture_output=True, text=True, check=True)
    return round(int(r.stdout) / 1024, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", nargs="?", help="the model to convert")
    p.add_argument("--types", default="q8_0,q4_k_m", help="comma-separated mixes (default q8_0,q4_k_m)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out-dir", default=None, help="where the outputs go (default: a temporary folder, removed)")
    p.add_argument("--synthesize", metavar="PATH", help="write a random F32 LLaMA-shaped GGUF to PATH first")
    p.add_argument("--layers", type=int, default=6, help="layers of the synthesized model (default 6)")
    p.add_argument("--synthesize-hf", metavar="DIR", help="write a random Qwen2.5-0.5B-shaped BF16 HF folder to DIR first")
    a = p.parse_args()
    if a.synthesize_hf:
        t0 = time.perf_counter()
        synthesize_hf(a.synthesize_hf)
        emit(bench="synthesize-hf", path=a.synthesize_hf, seconds=round(time.perf_counter() - t0, 2))
        a.src = a.src or a.synthesize_hf
    if a.synthesize:
        t0 = time.perf_counter()
        synthesize(a.synthesize, a.layers)
        emit(bench="synthesize", path=a.synthesize, bytes=os.path.getsize(a.synthesize),
             seconds=round(time.perf_counter() - t0, 2))
        a.src = a.src or a.synthesize
    if not a.src:
        p.error("SRC or --synthesize is needed")
    emit(bench="machine", python=platform.python_version(), cores=os.cpu_count(), threads=a.threads,
         child_baseline_rss_mib=baseline_rss_mib())
    with tempfile.TemporaryDirectory(dir=a.out_dir) as tmp:
        for mix in a.types.split(","):
            n_big, out_big = largest_tensor(a.src, mix)
            target = (1.5 * 4 * n_big + out_big) / (1 << 20)
            for i in range(a.repeats):
                dst = os.path.join(tmp, f"out-{mix}.gguf")
                r = run_child(a.src, dst, mix, a.threads)
                emit(bench="convert", src=a.src, type=mix, repeat=i, threads=a.threads, seconds=round(r["seconds"], 2),
                     src_mib=round(r["bytes_in"] / (1 << 20), 1), out_mib=round(r["bytes_out"] / (1 << 20), 1),
                     bpw_out=round(r["bpw_out"], 3), n_tensors=r["n_tensors"],
                     mb_in_per_s=round(r["bytes_in"] / 1e6 / r["seconds"], 1),
                     peak_rss_mib=r["peak_rss_mib"], rss_target_mib=round(target, 1),
                     largest_tensor_f32_mib=round(4 * n_big / (1 << 20), 1), fallbacks=r["fallbacks"])
                os.unlink(dst)


if __name__ == "__main__":
    main()
