"""A float64 NumPy reference forward pass for LLaMA-style decoders, independent of csrc/.

Written from the architecture descriptions, not from the engine:

- LLaMA (Touvron et al. 2023; Meta `llama/model.py`): pre-norm blocks
      h = x + Wo · attn(rope(Wq · n1(x)), rope(Wk · n1(x)), Wv · n1(x))
      y = h + Wd · (silu(Wg · n2(h)) * (Wu · n2(h)))
  RMSNorm n(x) = x / sqrt(mean(x²) + eps) * w; final norm; logits = Wout · n(x), with Wout =
  the token embedding when the file has no `output.weight` (tied).
- Grouped-query attention: query head h reads key/value head h // (n_heads / n_kv_heads)
  (Meta's `repeat_kv` repeats each kv head n_rep times consecutively); scores scaled by
  1/sqrt(head_dim), causal mask (key position <= query position), softmax over keys.
- RoPE (Su et al. 2021): inverse frequencies f_i = theta^(-2i / rope_dim), i < rope_dim / 2;
  position p rotates the pair (a, b) by p·f_i: (a cos − b sin, a sin + b cos). Pairs are
  (x[2i], x[2i+1]) for llama.cpp rope type NORM (GGUF `llama`, Meta checkpoints) and
  (x[i], x[i + rope_dim/2]) for NEOX / rotate-half (GGUF qwen2, qwen3). Dimensions past
  rope_dim are not rotated.
- Scaling: linear (GGUF `{arch}.rope.scaling.type = "linear"`): positions / factor.
  LLaMA-3 (Meta llama3 `apply_scaling`; HF rope_type "llama3"): with wavelen = 2π / f,
  f unchanged where wavelen < orig_ctx / high_freq_factor, f / factor where wavelen >
  orig_ctx / low_freq_factor, otherwise (1 − s)·f/factor + s·f with
  s = (orig_ctx / wavelen − low_freq_factor) / (high_freq_factor − low_freq_factor).
  llama.cpp's converter stores the same thing as a `rope_freqs.weight` tensor of per-pair
  divisors (1, factor, or 1 / ((1 − s)/factor + s)); ggml divides f_i by it. Both are read.
- Qwen2: biases on the q, k and v projections (`attn_q.bias`, ...).
- Qwen3 (transformers `modeling_qwen3.py`): RMSNorm over each head's head_dim on q and k
  (`attn_q_norm.weight`, `attn_k_norm.weight`, eps = the model's rms eps) after the
  projection and before RoPE; head_dim (`{arch}.attention.key_length`) may differ from
  dim / n_heads.

Options that mirror what an engine may legitimately do in lower precision, so a comparison can
stay tight: `act_quant=True` (or a set of weight dtype names, as the engine reports them) quantizes the input row of every matmul against a quantized weight
the way ggml does (Q8_0 blocks of 32 with an fp16 scale for Q4_0/Q4_1/Q5_x/Q8_0 weights; Q8_K
blocks of 256, iscale = −127 / (signed max), for K-quant weights), and `kv_dtype="f16"` rounds
the cached keys and values to float16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Config", "ReferenceModel", "rope_inv_freq", "llama3_scale", "llama3_rope_factors",
           "rms_norm", "apply_rope", "detokenize", "normwise_error"]


@dataclass
class Config:
    arch: str = "llama"
    n_vocab: int = 0
    dim: int = 0
    n_layers: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0
    head_dim: int = 0          # key length per head
    head_dim_v: int = 0        # value length per head (0: = head_dim)
    hidden_dim: int = 0
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_style: str = "norm"   # "norm" (adjacent pairs) or "neox" (halves)
    rope_dim: int = 0          # 0: = head_dim
    rope_scaling: str = "none"  # "none", "linear", "llama3"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_orig_ctx: int = 8192
    qkv_bias: bool = False
    qk_norm: bool = False
    tied_embeddings: bool = False
    extra: dict = field(default_factory=dict)

    def finish(self) -> "Config":
        c = replace(self)
        if not c.n_kv_heads:
            c.n_kv_heads = c.n_heads
        if not c.head_dim:
            c.head_dim = c.dim // c.n_heads
        if not c.head_dim_v:
            c.head_dim_v = c.head_dim
        if not c.rope_dim:
            c.rope_dim = c.head_dim
        return c


# Architectures whose GGUF tensors use NeoX (rotate-half) RoPE (llama.cpp llama_model_rope_type).
NEOX_ARCHS = {"qwen2", "qwen3", "qwen2moe", "qwen3moe", "phi2", "phi3", "gemma", "gemma2", "gemma3",
              "stablelm", "gptneox", "starcoder2", "olmo2", "falcon"}


def normwise_error(a, b) -> np.ndarray:
    """‖a − b‖₂ / ‖b‖₂ along the last axis (one value per row)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


# ----------------------------------------------------------------------------- primitives

def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x²) + eps) * w over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def llama3_scale(inv_freq: np.ndarray, factor: float, low: float, high: float, orig_ctx: float) -> np.ndarray:
    """Meta's llama3 `apply_scaling` on inverse frequencies."""
    wavelen = 2.0 * math.pi / inv_freq
    low_wavelen = orig_ctx / low       # longer than this: fully interpolated (divided by factor)
    high_wavelen = orig_ctx / high     # shorter than this: unchanged
    smooth = (orig_ctx / wavelen - low) / (high - low)
    mid = (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
    return np.where(wavelen < high_wavelen, inv_freq, np.where(wavelen > low_wavelen, inv_freq / factor, mid))


def llama3_rope_factors(rope_dim: int, theta: float, factor: float, low: float, high: float,
                        orig_ctx: float) -> np.ndarray:
    """Per-pair divisors as llama.cpp's converter stores them in `rope_freqs.weight`."""
    f = theta ** (-np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim)
    return f / llama3_scale(f, factor, low, high, orig_ctx)


def rope_inv_freq(cfg: Config, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """Inverse frequency of each rotated pair, after LLaMA-3 scaling or `rope_freqs` divisors.
    (Linear scaling is applied to positions, see `rope_positions`.)"""
    f = cfg.rope_theta ** (-np.arange(0, cfg.rope_dim, 2, dtype=np.float64) / cfg.rope_dim)
    if freq_factors is not None:
        f = f / np.asarray(freq_factors, np.float64)[: f.size]
    elif cfg.rope_scaling == "llama3":
        f = llama3_scale(f, cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
                         cfg.rope_orig_ctx)
    return f


def apply_rope(x: np.ndarray, pos: np.ndarray, inv_freq: np.ndarray, style: str, rope_dim: int) -> np.ndarray:
    """x: (T, H, head_dim); pos: (T,) float positions (already divided by a linear factor)."""
    ang = pos[:, None] * inv_freq[None, :]               # (T, rope_dim/2)
    c = np.cos(ang)[:, None, :]
    s = np.sin(ang)[:, None, :]
    y = x.copy()
    if style == "norm":
        a, b = x[..., 0:rope_dim:2], x[..., 1:rope_dim:2]
        y[..., 0:rope_dim:2] = a * c - b * s
        y[..., 1:rope_dim:2] = a * s + b * c
    elif style == "neox":
        half = rope_dim // 2
        a, b = x[..., :half], x[..., half:rope_dim]
        y[..., :half] = a * c - b * s
        y[..., half:rope_dim] = a * s + b * c
    else:
        raise ValueError(f"unknown rope style {style!r}")
    return y


# Activation quantization as ggml's vec_dot_type pairs it with the weight type.
_Q8_0_WEIGHTS = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "IQ4_NL"}
_Q8_K_WEIGHTS = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"}


def _round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_act_q8_0(x: np.ndarray) -> np.ndarray:
    """Rows of x through Q8_0 (block 32: d = amax/127 stored as fp16, q = round(x/d))."""
    xb = x.astype(np.float32).reshape(*x.shape[:-1], -1, 32)
    amax = np.max(np.abs(xb), axis=-1, keepdims=True)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        idv = np.where(d > 0, np.float32(1) / d, np.float32(0))
    q = _round_half_away(xb * idv)
    d16 = d.astype(np.float16).astype(np.float64)
    return (q * d16).reshape(x.shape)


def quantize_act_q8_k(x: np.ndarray) -> np.ndarray:
    """Rows of x through Q8_K (block 256: iscale = -127/max (signed max of largest |x|),
    q = min(127, rint(iscale·x)), d = 1/iscale as float32)."""
    xb = x.astype(np.float32).reshape(*x.shape[:-1], -1, 256)
    idx = np.argmax(np.abs(xb), axis=-1)[..., None]
    mx = np.take_along_axis(xb, idx, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(mx != 0, np.float32(-127) / mx, np.float32(0)).astype(np.float32)
        q = np.minimum(127, np.rint((iscale * xb).astype(np.float32)))
        d = np.where(iscale != 0, np.float32(1) / iscale, np.float32(0)).astype(np.float32)
    return (q * d.astype(np.float64)).reshape(x.shape)


def detokenize(vocab, ids, bos: int = 1) -> str:
    """SentencePiece pieces to text the way llama2.c prints them: '▁' → space, <0xNN> → the
    byte, and a piece right after BOS loses its leading space."""
    out = bytearray()
    prev = bos
    for t in ids:
        piece = vocab[t]
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            b = bytes([int(piece[3:5], 16)])
        else:
            b = piece.replace("\u2581", " ").encode("utf-8")
            if prev == bos and b.startswith(b" "):
                b = b[1:]
        out += b
        prev = t
    return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- GGUF reading

def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def read_gguf(path):
    """(Config, {name: float64 array in NumPy order}, {name: dtype name}, metadata dict)."""
    import gguf
    from gguf import quants

    reader = gguf.GGUFReader(str(path))
    meta = {k: _field(reader, k) for k in reader.fields if not k.startswith("GGUF.")}
    arch = meta.get("general.architecture", "llama")

    def key(k, default=None):
        return meta.get(f"{arch}.{k}", default)

    tensors, dtypes = {}, {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))   # GGUF ne order -> NumPy order
        arr = quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.asarray(arr, np.float64).reshape(shape)
        dtypes[t.name] = t.tensor_type.name

    n_heads = int(key("attention.head_count"))
    dim = int(key("embedding_length"))
    scaling = key("rope.scaling.type", "none") or "none"
    factor = float(key("rope.scaling.factor", 0.0) or 0.0)
    if scaling == "none" and key("rope.scale_linear") is not None:   # older key
        scaling, factor = "linear", float(key("rope.scale_linear"))
    if scaling == "linear" and factor in (0.0, 1.0):
        scaling = "none"
    emb = tensors["token_embd.weight"]
    cfg = Config(
        arch=arch,
        n_vocab=int(emb.shape[0]),
        dim=dim,
        n_layers=int(key("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        head_dim=int(key("attention.key_length", dim // n_heads)),
        head_dim_v=int(key("attention.value_length", key("attention.key_length", dim // n_heads))),
        hidden_dim=int(key("feed_forward_length")),
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        rope_style="neox" if arch in NEOX_ARCHS else "norm",
        rope_dim=int(key("rope.dimension_count", 0) or 0),
        rope_scaling=scaling,
        rope_factor=factor if factor else 1.0,
        rope_orig_ctx=int(key("rope.scaling.original_context_length", 0) or Config.rope_orig_ctx),
        qkv_bias="blk.0.attn_q.bias" in tensors,
        qk_norm="blk.0.attn_q_norm.weight" in tensors,
        tied_embeddings="output.weight" not in tensors,
    ).finish()
    return cfg, tensors, dtypes, meta


# ----------------------------------------------------------------------------- the model

class ReferenceModel:
    """float64 decoder with its own KV cache (one sequence)."""

    def __init__(self, config: Config, weights: dict, dtypes: dict | None = None, *,
                 act_quant: bool | frozenset = False, kv_dtype: str = "f32", vocab=None):
        self.config = config.finish()
        self.w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
        self.dtypes = dtypes or {}
        self.act_quant = act_quant
        self.kv_dtype = kv_dtype
        self.vocab = vocab
        c = self.config
        self.inv_freq = rope_inv_freq(c, self.w.get("rope_freqs.weight"))
        if c.n_heads % c.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        self.reset()

    @classmethod
    def from_gguf(cls, path, **kw) -> "ReferenceModel":
        cfg, tensors, dtypes, meta = read_gguf(path)
        vocab = meta.get("tokenizer.ggml.tokens")
        return cls(cfg, tensors, dtypes, vocab=list(vocab) if vocab is not None else None, **kw)

    def reset(self):
        c = self.config
        self.k_cache = [np.zeros((c.n_kv_heads, 0, c.head_dim)) for _ in range(c.n_layers)]
        self.v_cache = [np.zeros((c.n_kv_heads, 0, c.head_dim_v)) for _ in range(c.n_layers)]
        self.pos = 0

    # a matmul x @ W.T against weight `name`, with the activation quantized as ggml would
    def _mm(self, x: np.ndarray, name: str) -> np.ndarray:
        w = self.w[name]
        dt = self.dtypes.get(name, "F32")
        if self.act_quant and (self.act_quant is True or dt in self.act_quant):
            if dt in _Q8_0_WEIGHTS:
                x = quantize_act_q8_0(x)
            elif dt in _Q8_K_WEIGHTS:
                x = quantize_act_q8_k(x)
        return x @ w.T

    def _linear(self, x, prefix):
        y = self._mm(x, prefix + ".weight")
        b = self.w.get(prefix + ".bias")
        return y + b if b is not None else y

    def forward(self, tokens, start_pos: int = 0) -> np.ndarray:
        """Logits (len(tokens), n_vocab) in float64; continues the cache at start_pos."""
        c = self.config
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        if start_pos != self.pos:
            raise ValueError(f"start_pos {start_pos} does not continue the cache (at {self.pos})")
        T = tokens.size
        pos = np.arange(start_pos, start_pos + T, dtype=np.float64)
        rope_pos = pos / c.rope_factor if c.rope_scaling == "linear" else pos
        n_rep = c.n_heads // c.n_kv_heads
        scale = 1.0 / math.sqrt(c.head_dim)
        x = self.w["token_embd.weight"][tokens]                        # (T, dim)
        S = start_pos + T
        # causal mask: query at position start_pos + t sees keys 0 .. start_pos + t
        mask = np.arange(S)[None, :] <= (start_pos + np.arange(T))[:, None]   # (T, S)
        for l in range(c.n_layers):
            p = f"blk.{l}."
            h = rms_norm(x, self.w[p + "attn_norm.weight"], c.norm_eps)
            q = self._linear(h, p + "attn_q").reshape(T, c.n_heads, c.head_dim)
            k = self._linear(h, p + "attn_k").reshape(T, c.n_kv_heads, c.head_dim)
            v = self._linear(h, p + "attn_v").reshape(T, c.n_kv_heads, c.head_dim_v)
            if c.qk_norm:
                q = rms_norm(q, self.w[p + "attn_q_norm.weight"], c.norm_eps)
                k = rms_norm(k, self.w[p + "attn_k_norm.weight"], c.norm_eps)
            q = apply_rope(q, rope_pos, self.inv_freq, c.rope_style, c.rope_dim)
            k = apply_rope(k, rope_pos, self.inv_freq, c.rope_style, c.rope_dim)
            if self.kv_dtype == "f16":
                k = k.astype(np.float16).astype(np.float64)
                v = v.astype(np.float16).astype(np.float64)
            K = self.k_cache[l] = np.concatenate([self.k_cache[l], k.transpose(1, 0, 2)], axis=1)
            V = self.v_cache[l] = np.concatenate([self.v_cache[l], v.transpose(1, 0, 2)], axis=1)
            qg = q.transpose(1, 0, 2).reshape(c.n_kv_heads, n_rep, T, c.head_dim)
            scores = np.einsum("grtd,gsd->grts", qg, K) * scale          # (kv, rep, T, S)
            scores = np.where(mask, scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            o = np.einsum("grts,gsd->grtd", probs, V)                    # (kv, rep, T, hdv)
            o = o.reshape(c.n_heads, T, c.head_dim_v).transpose(1, 0, 2).reshape(T, -1)
            x = x + self._mm(o, p + "attn_output.weight")
            h = rms_norm(x, self.w[p + "ffn_norm.weight"], c.norm_eps)
            g = self._mm(h, p + "ffn_gate.weight")
            u = self._mm(h, p + "ffn_up.weight")
            x = x + self._mm(silu(g) * u, p + "ffn_down.weight")
        self.pos = S
        x = rms_norm(x, self.w["output_norm.weight"], c.norm_eps)
        head = "output.weight" if "output.weight" in self.w else "token_embd.weight"
        return self._mm(x, head)

    def greedy(self, prompt, n_new: int) -> list[int]:
        """Greedy continuation from a fresh cache: prompt + n_new tokens (argmax each step)."""
        self.reset()
        toks = list(prompt)
        logits = self.forward(toks, 0)
        for _ in range(n_new):
            nxt = int(np.argmax(logits[-1]))
            toks.append(nxt)
            logits = self.forward([nxt], self.pos)
        return toks
