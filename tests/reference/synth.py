"""Seeded random small models of each supported decoder variant, written as GGUF files.

    spec = synth.make("qwen3", rng)                   # config + float32 weights (NumPy order)
    synth.write(spec, "m.gguf", dtype="q4_0")         # every 2-D weight quantized, norms F32

Variants (VARIANTS):
    llama         GGUF arch llama, RoPE NORM, untied output head, 3 layers
    llama-tied    as llama, no output.weight (head = token embedding)
    llama3-rope   llama + LLaMA-3 frequency scaling stored as `rope_freqs.weight`
                  (llama.cpp's form: per-pair divisors), factor 4, low 1, high 4, orig ctx 64 —
                  small enough that the scaling changes the logits of short prompts
    llama-linear  llama + `llama.rope.scaling.type = "linear"`, factor 4
    qwen2         GGUF arch qwen2, RoPE NEOX, q/k/v biases, theta 1e6, eps 1e-6
    qwen3         GGUF arch qwen3, RoPE NEOX, per-head q/k RMSNorm, head_dim ≠ dim / n_heads
                  (`qwen3.attention.key_length`), no biases

Sizes: dim 64, hidden 160, 4 heads, 2 kv heads, head_dim 16 (qwen3: 24), vocab 288 — every
row a multiple of 32 (Q8_0/Q4_0). With `k_quant=True` (needed for Q4_K: rows of 256): dim 256,
hidden 512, head_dim 64 (qwen3: 128). Weights N(0, 1/fan_in) so activations stay O(1); norm
weights 1 + N(0, 0.1²); biases N(0, 0.1²); embeddings N(0, 1).

The tokenizer in the metadata is a minimal valid SentencePiece ("llama") vocabulary:
<unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, then a few normal pieces; bos 1, eos 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .forward import Config, llama3_rope_factors

VARIANTS = ["llama", "llama-tied", "llama3-rope", "llama-linear", "qwen2", "qwen3"]

_NORMAL_PIECES = ["\u2581", "\u2581t", "\u2581a", "e", "\u2581the", "he", "in", "\u2581s", "er", "on",
                  "\u2581w", "an", "\u2581h", "ou", "at", "\u2581b", "\u2581o", "en", "\u2581c", "it",
                  "is", "\u2581f", "ed", "\u2581m", "\u2581d", "or", "ing", "\u2581l", "\u2581was"]


def vocabulary():
    """(tokens, scores, token types) of the minimal SentencePiece vocabulary (288 entries)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + _NORMAL_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(_NORMAL_PIECES)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i + 1) for i in range(len(_NORMAL_PIECES))]
    return tokens, np.asarray(scores, np.float32), np.asarray(types, np.int32)


@dataclass
class Spec:
    variant: str
    config: Config
    weights: dict                        # name -> float32 array, NumPy order (out, in)
    metadata: dict = field(default_factory=dict)


def make(variant: str, rng: np.random.Generator, *, k_quant: bool = False, n_layers: int | None = None) -> Spec:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    arch = {"qwen2": "qwen2", "qwen3": "qwen3"}.get(variant, "llama")
    dim, hidden = (256, 512) if k_quant else (64, 160)
    n_heads, n_kv = 4, 2
    head_dim = dim // n_heads
    if variant == "qwen3":
        head_dim = 128 if k_quant else 24
    layers = n_layers or (3 if variant == "llama" else 2)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    cfg = Config(arch=arch, n_vocab=n_vocab, dim=dim, n_layers=layers, n_heads=n_heads,
                 n_kv_heads=n_kv, head_dim=head_dim, hidden_dim=hidden,
                 norm_eps=float(np.float32(1e-6 if arch != "llama" else 1e-5)),
                 rope_theta=1e6 if arch != "llama" else 10000.0,
                 rope_style="neox" if arch != "llama" else "norm",
                 qkv_bias=variant == "qwen2", qk_norm=variant == "qwen3",
                 tied_embeddings=variant == "llama-tied")
    if variant == "llama-linear":
        cfg.rope_scaling, cfg.rope_factor = "linear", 4.0
    if variant == "llama3-rope":
        cfg.rope_scaling, cfg.rope_factor, cfg.rope_low_freq_factor = "llama3", 4.0, 1.0
        cfg.rope_high_freq_factor, cfg.rope_orig_ctx = 4.0, 64
    cfg = cfg.finish()

    def lin(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def bias(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": rng.standard_normal((n_vocab, dim)).astype(np.float32)}
    q_out, kv_out = n_heads * head_dim, n_kv * head_dim
    for l in range(layers):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(dim)
        w[p + "attn_q.weight"] = lin(q_out, dim)
        w[p + "attn_k.weight"] = lin(kv_out, dim)
        w[p + "attn_v.weight"] = lin(kv_out, dim)
        if cfg.qkv_bias:
            w[p + "attn_q.bias"] = bias(q_out)
            w[p + "attn_k.bias"] = bias(kv_out)
            w[p + "attn_v.bias"] = bias(kv_out)
        if cfg.qk_norm:
            w[p + "attn_q_norm.weight"] = norm(head_dim)
            w[p + "attn_k_norm.weight"] = norm(head_dim)
        w[p + "attn_output.weight"] = lin(dim, q_out)
        w[p + "ffn_norm.weight"] = norm(dim)
        w[p + "ffn_gate.weight"] = lin(hidden, dim)
        w[p + "ffn_up.weight"] = lin(hidden, dim)
        w[p + "ffn_down.weight"] = lin(dim, hidden)
    w["output_norm.weight"] = norm(dim)
    if not cfg.tied_embeddings:
        w["output.weight"] = lin(n_vocab, dim)
    if variant == "llama3-rope":
        w["rope_freqs.weight"] = llama3_rope_factors(
            cfg.rope_dim, cfg.rope_theta, cfg.rope_factor, cfg.rope_low_freq_factor,
            cfg.rope_high_freq_factor, cfg.rope_orig_ctx).astype(np.float32)

    from torchless.gguf import Value

    u32 = lambda x: Value(int(x), "uint32")  # noqa: E731
    f32 = lambda x: Value(float(x), "float32")  # noqa: E731
    md = {
        "general.architecture": arch,
        "general.name": f"synthetic-{variant}",
        "general.file_type": u32(0),
        f"{arch}.context_length": u32(512),
        f"{arch}.embedding_length": u32(dim),
        f"{arch}.block_count": u32(layers),
        f"{arch}.feed_forward_length": u32(hidden),
        f"{arch}.attention.head_count": u32(n_heads),
        f"{arch}.attention.head_count_kv": u32(n_kv),
        f"{arch}.rope.freq_base": f32(cfg.rope_theta),
        f"{arch}.rope.dimension_count": u32(cfg.rope_dim),
        f"{arch}.attention.layer_norm_rms_epsilon": f32(cfg.norm_eps),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": Value(tokens, "array[string]"),
        "tokenizer.ggml.scores": Value(scores, "array[float32]"),
        "tokenizer.ggml.token_type": Value(types, "array[int32]"),
        "tokenizer.ggml.unknown_token_id": u32(0),
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
    }
    if variant == "qwen3" or head_dim != dim // n_heads:
        md[f"{arch}.attention.key_length"] = u32(head_dim)
        md[f"{arch}.attention.value_length"] = u32(head_dim)
    if variant == "llama-linear":
        md[f"{arch}.rope.scaling.type"] = "linear"
        md[f"{arch}.rope.scaling.factor"] = f32(cfg.rope_factor)
    return Spec(variant, cfg, w, md)


_FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k": 15}


def write(spec: Spec, path, dtype: str = "f32") -> None:
    """Write spec as GGUF; with a quantized dtype every 2-D weight is stored in it (norms,
    biases and rope_freqs stay F32)."""
    import torchless
    from torchless.gguf import Value

    md = dict(spec.metadata)
    md["general.file_type"] = Value(_FILE_TYPE.get(dtype, 0), "uint32")
    tensors = {}
    for name, a in spec.weights.items():
        if a.ndim == 2 and dtype != "f32":
            if dtype == "f16":
                tensors[name] = a.astype(np.float16)
            else:
                tensors[name] = (dtype, torchless.quantize(np.ascontiguousarray(a, np.float32), dtype), a.shape)
        else:
            tensors[name] = np.ascontiguousarray(a, np.float32)
    torchless.gguf.write(path, md, tensors)


def permute_for_neox(w: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    """Reorder the rows of a q/k projection (or the entries of a per-head norm weight when
    n_heads = 1) so that NEOX RoPE on the result equals NORM RoPE on the original: within a
    head, row 2i goes to i and row 2i+1 to i + head_dim/2 (the inverse of the permutation
    llama.cpp's converter undoes for HF LLaMA checkpoints)."""
    idx = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    shape = w.shape
    return w.reshape(n_heads, head_dim, *shape[1:])[:, idx].reshape(shape)
