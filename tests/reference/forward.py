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
- Mistral (transformers `modeling_mistral.py`): LLaMA with a sliding window W on every layer:
  the query at position p sees keys at positions p − W < j ≤ p (transformers'
  `sliding_window_overlay`: kv_idx > q_idx − W). HF LLaMA/Mistral q/k rows are in rotate-half
  order: GGUF `llama` with `torchless.rope.neox = true` runs them with NEOX RoPE as they are.
- Gemma (transformers `modeling_gemma.py`): embeddings × sqrt(dim); GeGLU
  y = Wd · (gelu_tanh(Wg · x) * (Wu · x)) with gelu_tanh(x) = x/2 · (1 + tanh(sqrt(2/π)(x +
  0.044715 x³))); RMSNorm x·(1 + w) in HF, i.e. x·w with the GGUF weight (llama.cpp's converter
  adds the 1 to every Gemma norm, q/k norms included); tied head; NEOX RoPE.
- Gemma 2 (`modeling_gemma2.py`): four norms per block,
      h = x + n_post_attn(attn(n_attn(x)));  y = h + n_post_ffw(ffn(n_ffn(h)))
  (GGUF `post_attention_norm`, `post_ffw_norm`); scores = c·tanh(q·k·s / c) with the attention
  soft-cap c (50) before the mask; logits = c'·tanh(z / c') with the final soft-cap c' (30);
  s = query_pre_attn_scalar^−½; layers 0, 2, 4, ... use the sliding window.
- Gemma 3 (`modeling_gemma3.py`): Gemma 2's block without soft-caps (unless configured) plus
  per-head q/k RMSNorm (as Qwen3); layer l is windowed unless (l + 1) % 6 == 0; windowed layers
  use RoPE base `rope_local_base_freq` (10000) without scaling, global layers `rope_theta` with
  the model's rope scaling (linear: frequencies / factor).
- Phi-3 (`modeling_phi3.py`): fused `attn_qkv` (q rows, then k, then v) and `ffn_up` holding
  gate then up (2·hidden rows, SwiGLU); LongRoPE (`rope_factors_short.weight`,
  `rope_factors_long.weight`): f_i = theta^(−2i/d) / factor_i, with the short factors while the
  sequence fits the original context and the long ones beyond it (transformers decides per
  forward call from the highest position; `Config.rope_long` forces a choice), and cos/sin
  multiplied by the magnitude factor sqrt(1 + ln(ctx / orig_ctx) / ln(orig_ctx)) (so q·k by its
  square).

Per-layer attention options (all architectures): `sliding_window` W with `swa_pattern`
(None: every layer when W is set, gemma2: 2, gemma3: 6; int n: layer l windowed iff
l % n < n − 1; a sequence: nonzero = windowed), `rope_theta_swa` / `rope_scaling_swa` for the
windowed layers, `attn_scale` (0: 1/sqrt(head_dim)), `attn_softcap`, `final_softcap`,
`embed_scale` (0: none).

Options that mirror what an engine may legitimately do in lower precision, so a comparison can
stay tight: `act_quant=True` (or a set of weight dtype names, as the engine reports them) quantizes the input row of every matmul against a quantized weight
the way ggml does (Q8_0 blocks of 32 with an fp16 scale for Q4_0/Q4_1/Q5_x/Q8_0 weights; Q8_K
blocks of 256, iscale = −127 / (signed max), for K-quant weights), and `kv_dtype="f16"` rounds
the cached keys and values to float16, `kv_dtype="q8_0"` through Q8_0 blocks of 32 along each
head (the `gguf` package's quantizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Config", "ReferenceModel", "quantize_act", "rope_inv_freq", "llama3_scale", "llama3_rope_factors",
           "longrope_attn_factor", "rms_norm", "gelu_tanh", "softcap", "apply_rope", "detokenize",
           "normwise_error"]


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
    act: str = "silu"            # "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    embed_scale: float = 0.0     # 0: none; gemma: sqrt(dim)
    post_norms: bool = False     # gemma2/3: post-attention and post-FFN norms
    attn_scale: float = 0.0      # 0: 1/sqrt(head_dim)
    attn_softcap: float = 0.0    # 0: none
    final_softcap: float = 0.0   # 0: none
    sliding_window: int = 0      # 0: none
    swa_pattern: object = None   # None, int n, or a per-layer sequence (see module docstring)
    rope_theta_swa: float = 0.0  # 0: rope_theta
    rope_scaling_swa: str = ""   # "": as the global layers ("none" for gemma3)
    rope_attn_factor: float = 1.0  # LongRoPE magnitude factor on cos/sin
    rope_long: object = None     # LongRoPE: True/False forces long/short factors; None: by length
    extra: dict = field(default_factory=dict)

    def windowed(self, layer: int) -> bool:
        """Whether `layer` is a local (sliding-window) layer: the window masks its keys when
        `sliding_window` is set, and it uses the windowed-layer RoPE (gemma3: local base). For
        gemma2/gemma3 the layer type follows the pattern even without a window."""
        p = self.swa_pattern
        if p is None:
            p = {"gemma2": 2, "gemma3": 6}.get(self.arch)
        if p is None:
            return bool(self.sliding_window)
        if isinstance(p, (int, np.integer)):
            return layer % int(p) < int(p) - 1
        return bool(list(p)[layer])

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

    def swa_rope(self) -> tuple[float, str]:
        """(theta, scaling) of the windowed layers: `rope_theta_swa` / `rope_scaling_swa` when
        set, else the global ones (gemma3: no scaling on windowed layers)."""
        scaling = self.rope_scaling_swa or ("none" if self.arch == "gemma3" else self.rope_scaling)
        return self.rope_theta_swa or self.rope_theta, scaling


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


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (Hendrycks & Gimpel 2016; transformers `gelu_pytorch_tanh`)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    """cap · tanh(x / cap) (Gemma 2 attention and final logit soft-capping); cap 0: x."""
    return cap * np.tanh(x / cap) if cap else x


def longrope_attn_factor(ctx: float, orig_ctx: float) -> float:
    """Phi-3 LongRoPE magnitude factor sqrt(1 + ln(s) / ln(orig_ctx)), s = ctx / orig_ctx > 1
    (transformers `_compute_longrope_parameters`; llama.cpp's converter writes the same value
    as `{arch}.rope.scaling.attn_factor`)."""
    s = ctx / orig_ctx
    return math.sqrt(1.0 + math.log(s) / math.log(orig_ctx)) if s > 1.0 else 1.0


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


def rope_inv_freq(cfg: Config, freq_factors: np.ndarray | None = None, *, theta: float | None = None,
                  scaling: str | None = None) -> np.ndarray:
    """Inverse frequency of each rotated pair, after LLaMA-3 scaling or per-pair divisors
    (`rope_freqs`, LongRoPE factors). (Linear scaling is applied to positions, in forward.)
    `theta`/`scaling` override the global ones (windowed layers)."""
    theta = cfg.rope_theta if theta is None else theta
    scaling = cfg.rope_scaling if scaling is None else scaling
    f = theta ** (-np.arange(0, cfg.rope_dim, 2, dtype=np.float64) / cfg.rope_dim)
    if freq_factors is not None:
        f = f / np.asarray(freq_factors, np.float64)[: f.size]
    elif scaling == "llama3":
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


def quantize_act(x: np.ndarray, dtype: str) -> np.ndarray:
    """x as ggml quantizes a matmul's input against weights of `dtype` (a gguf type name such
    as "Q4_K"): Q8_0 or Q8_K blocks, or x itself for float weights."""
    if dtype in _Q8_0_WEIGHTS:
        return quantize_act_q8_0(x)
    if dtype in _Q8_K_WEIGHTS:
        return quantize_act_q8_k(x)
    return x


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


def q8_0_round(x: np.ndarray) -> np.ndarray:
    """x (rows of the last axis, a multiple of 32) through Q8_0 blocks and back, by the `gguf`
    package's quantizer and dequantizer (ggml's reference rounding), from float32 as an engine
    holds them: a Q8_0 KV cache."""
    from gguf import GGMLQuantizationType, quants

    f = np.ascontiguousarray(x, np.float32)
    q = quants.quantize(f, GGMLQuantizationType.Q8_0)
    return np.asarray(quants.dequantize(q, GGMLQuantizationType.Q8_0), np.float64).reshape(x.shape)


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
    head_dim = int(key("attention.key_length", dim // n_heads))
    n_ctx = int(key("context_length", 0) or 0)
    orig_ctx = int(key("rope.scaling.original_context_length", 0) or 0)
    longrope = "rope_factors_short.weight" in tensors or "rope_factors_long.weight" in tensors
    attn_factor = key("rope.scaling.attn_factor")
    if attn_factor is None:
        attn_factor = longrope_attn_factor(n_ctx, orig_ctx) if longrope and orig_ctx else 1.0
    gemma = arch in ("gemma", "gemma2", "gemma3")
    pattern = key("attention.sliding_window_pattern")
    if pattern is not None and not isinstance(pattern, (int, np.integer)):
        pattern = [int(v) for v in pattern]
    neox = arch in NEOX_ARCHS or bool(meta.get("torchless.rope.neox", False))
    cfg = Config(
        arch=arch,
        n_vocab=int(emb.shape[0]),
        dim=dim,
        n_layers=int(key("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        head_dim_v=int(key("attention.value_length", key("attention.key_length", dim // n_heads))),
        hidden_dim=int(key("feed_forward_length")),
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        rope_style="neox" if neox else "norm",
        rope_dim=int(key("rope.dimension_count", 0) or 0),
        rope_scaling="longrope" if longrope else scaling,
        rope_factor=factor if factor else 1.0,
        rope_orig_ctx=orig_ctx or Config.rope_orig_ctx,
        qkv_bias="blk.0.attn_q.bias" in tensors or "blk.0.attn_qkv.bias" in tensors,
        qk_norm="blk.0.attn_q_norm.weight" in tensors,
        tied_embeddings="output.weight" not in tensors,
        act="gelu_tanh" if gemma else "silu",
        embed_scale=math.sqrt(dim) if gemma else 0.0,
        post_norms="blk.0.post_attention_norm.weight" in tensors,
        attn_scale=float(key("attention.scale", 0.0) or 0.0),
        attn_softcap=float(key("attn_logit_softcapping", 50.0 if arch == "gemma2" else 0.0) or 0.0),
        final_softcap=float(key("final_logit_softcapping", 30.0 if arch == "gemma2" else 0.0) or 0.0),
        sliding_window=int(key("attention.sliding_window", 0) or 0),
        swa_pattern=pattern,
        rope_theta_swa=float(key("rope.freq_base_swa", 10000.0 if arch == "gemma3" else 0.0) or 0.0),
        rope_attn_factor=float(attn_factor),
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
        # windowed layers: their own base; gemma3 applies no scaling there (llama.cpp
        # rope_freq_scale_train_swa = 1; transformers' local rotary embedding is "default")
        theta_swa, self.scaling_swa = c.swa_rope()
        inherits = not c.rope_scaling_swa and c.arch != "gemma3"     # rope_freqs divisors too
        self.inv_freq_swa = rope_inv_freq(c, self.w.get("rope_freqs.weight") if inherits else None,
                                          theta=theta_swa, scaling=self.scaling_swa)
        if c.n_heads % c.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        self.reset()

    @classmethod
    def from_gguf(cls, path, **kw) -> "ReferenceModel":
        cfg, tensors, dtypes, meta = read_gguf(path)
        vocab = meta.get("tokenizer.ggml.tokens")
        return cls(cfg, tensors, dtypes, vocab=list(vocab) if vocab is not None else None, **kw)

    @classmethod
    def from_hf(cls, source, state_dict=None, *, gguf_order: bool = False, **kw) -> "ReferenceModel":
        """From a Hugging Face folder (config.json + *.safetensors), or from an HF config dict
        and a state dict of HF-named arrays (see reference.hf)."""
        from . import hf

        if state_dict is None:
            source, state_dict = hf.read_folder(source)
        cfg, w = hf.from_hf(source, state_dict, gguf_order=gguf_order)
        return cls(cfg, w, **kw)

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
            x = quantize_act(x, dt)
        return x @ w.T

    def _linear(self, x, prefix):
        y = self._mm(x, prefix + ".weight")
        b = self.w.get(prefix + ".bias")
        return y + b if b is not None else y

    def _qkv(self, h, p):
        """q, k, v projections of the normed input (fused `attn_qkv`: q rows, k rows, v rows)."""
        c = self.config
        if p + "attn_qkv.weight" not in self.w:
            return self._linear(h, p + "attn_q"), self._linear(h, p + "attn_k"), self._linear(h, p + "attn_v")
        y = self._linear(h, p + "attn_qkv")
        nq, nk = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        return y[:, :nq], y[:, nq:nq + nk], y[:, nq + nk:]

    def _ffn(self, h, p):
        """Gated FFN: Wd · (act(Wg · h) * (Wu · h)); a fused `ffn_up` without `ffn_gate` holds
        the gate rows, then the up rows (Phi-3's gate_up_proj)."""
        c = self.config
        if p + "ffn_gate.weight" in self.w:
            g = self._mm(h, p + "ffn_gate.weight")
            u = self._mm(h, p + "ffn_up.weight")
        else:
            gu = self._mm(h, p + "ffn_up.weight")
            g, u = gu[:, :gu.shape[1] // 2], gu[:, gu.shape[1] // 2:]
        a = gelu_tanh(g) if c.act == "gelu_tanh" else silu(g)
        return self._mm(a * u, p + "ffn_down.weight")

    def _longrope_inv_freq(self, n_positions: int):
        """LongRoPE inverse frequencies: long factors when forced or when the positions seen
        (transformers: max position id + 1 of this call) exceed the original context."""
        c = self.config
        use_long = c.rope_long if c.rope_long is not None else n_positions > c.rope_orig_ctx
        name = "rope_factors_long.weight" if use_long else "rope_factors_short.weight"
        return rope_inv_freq(c, self.w[name], scaling="none")

    def forward(self, tokens, start_pos: int = 0) -> np.ndarray:
        """Logits (len(tokens), n_vocab) in float64; continues the cache at start_pos."""
        c = self.config
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        if start_pos != self.pos:
            raise ValueError(f"start_pos {start_pos} does not continue the cache (at {self.pos})")
        T = tokens.size
        S = start_pos + T
        pos = np.arange(start_pos, S, dtype=np.float64)
        n_rep = c.n_heads // c.n_kv_heads
        scale = c.attn_scale or 1.0 / math.sqrt(c.head_dim)
        inv_freq, inv_freq_swa, mscale = self.inv_freq, self.inv_freq_swa, 1.0
        if c.rope_scaling == "longrope":
            inv_freq = inv_freq_swa = self._longrope_inv_freq(S)
            mscale = c.rope_attn_factor
        x = self.w["token_embd.weight"][tokens]                        # (T, dim)
        if c.embed_scale:
            x = x * c.embed_scale
        # causal mask: query at position start_pos + t sees keys 0 .. start_pos + t; with a
        # window W only keys j > start_pos + t − W
        qpos = (start_pos + np.arange(T))[:, None]
        kpos = np.arange(S)[None, :]
        causal = kpos <= qpos                                            # (T, S)
        windowed = causal & (kpos > qpos - c.sliding_window) if c.sliding_window else causal
        for l in range(c.n_layers):
            p = f"blk.{l}."
            swa = c.windowed(l)
            h = rms_norm(x, self.w[p + "attn_norm.weight"], c.norm_eps)
            q, k, v = self._qkv(h, p)
            q = q.reshape(T, c.n_heads, c.head_dim)
            k = k.reshape(T, c.n_kv_heads, c.head_dim)
            v = v.reshape(T, c.n_kv_heads, c.head_dim_v)
            if c.qk_norm:
                q = rms_norm(q, self.w[p + "attn_q_norm.weight"], c.norm_eps)
                k = rms_norm(k, self.w[p + "attn_k_norm.weight"], c.norm_eps)
            scaling = self.scaling_swa if swa else c.rope_scaling
            rope_pos = pos / c.rope_factor if scaling == "linear" else pos
            f = inv_freq_swa if swa else inv_freq
            q = apply_rope(q, rope_pos, f, c.rope_style, c.rope_dim) * mscale
            k = apply_rope(k, rope_pos, f, c.rope_style, c.rope_dim) * mscale
            if self.kv_dtype == "f16":
                k = k.astype(np.float16).astype(np.float64)
                v = v.astype(np.float16).astype(np.float64)
            elif self.kv_dtype == "q8_0":
                k, v = q8_0_round(k), q8_0_round(v)
            K = self.k_cache[l] = np.concatenate([self.k_cache[l], k.transpose(1, 0, 2)], axis=1)
            V = self.v_cache[l] = np.concatenate([self.v_cache[l], v.transpose(1, 0, 2)], axis=1)
            qg = q.transpose(1, 0, 2).reshape(c.n_kv_heads, n_rep, T, c.head_dim)
            scores = np.einsum("grtd,gsd->grts", qg, K) * scale          # (kv, rep, T, S)
            scores = softcap(scores, c.attn_softcap)
            scores = np.where(windowed if swa else causal, scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            o = np.einsum("grts,gsd->grtd", probs, V)                    # (kv, rep, T, hdv)
            o = o.reshape(c.n_heads, T, c.head_dim_v).transpose(1, 0, 2).reshape(T, -1)
            a = self._linear(o, p + "attn_output")
            if c.post_norms:
                a = rms_norm(a, self.w[p + "post_attention_norm.weight"], c.norm_eps)
            x = x + a
            h = rms_norm(x, self.w[p + "ffn_norm.weight"], c.norm_eps)
            m = self._ffn(h, p)
            if c.post_norms:
                m = rms_norm(m, self.w[p + "post_ffw_norm.weight"], c.norm_eps)
            x = x + m
        self.pos = S
        x = rms_norm(x, self.w["output_norm.weight"], c.norm_eps)
        head = "output.weight" if "output.weight" in self.w else "token_embd.weight"
        return softcap(self._mm(x, head), c.final_softcap)

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
