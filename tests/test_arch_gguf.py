"""Architectures as traits of the one forward: gemma, gemma2, gemma3, phi3, sliding-window
llama (Mistral style) and `torchless.rope.neox`, in GGUF semantics (docs/architectures.md).

Oracles:
- a private float64 NumPy forward written here from transformers' modeling_gemma/gemma2/
  gemma3/phi3.py and llama.cpp's src/models/*.cpp (not from csrc/), run on seeded random
  synthetic GGUF models; each trait is also switched off in the oracle to show that the
  comparison would catch its absence ("ablation": the error must then be far above the bound);
- the packaged Gemma 3 270M (Q4_K_M): its logits against the same oracle on the file's weights
  dequantized by the `gguf` package, and a known greedy continuation;
- the `sentencepiece` package, loaded with a ModelProto built from the GGUF vocabulary of Gemma 3,
  on the tokenizer corpus.

Tolerance against the oracle: normwise per position 1e-4 (F32 weights, F32 KV cache; the engine
computes in float32, about 1e-6 here), as tests/test_forward.py; quantized weights whose matmuls
quantize their inputs (the engine's config["activation_quant"]) are compared with an oracle that
quantizes them the same way, within 5e-2 (one element rounding the other way, see test_forward).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

import torchless
from torchless.gguf import Value
from reference import synth
from reference.forward import quantize_act

TOL = 1e-4
TOL_ACT = 5e-2  # quantized activations: one input element rounded to the other quantum (tests/test_forward.py)
ABLATED = 1e-2  # an oracle without one of the model's traits must miss the engine by more than this

# ----------------------------------------------------------------------------- float64 oracle


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def rotate(x, cos, sin, neox):
    """RoPE on (tokens, heads, head_dim): NEOX pairs (i, i + d/2), NORM pairs (2i, 2i + 1)."""
    d = cos.shape[-1] * 2
    out = x.copy()
    if neox:
        a, b = x[..., : d // 2], x[..., d // 2 : d]
        out[..., : d // 2] = a * cos - b * sin
        out[..., d // 2 : d] = a * sin + b * cos
    else:
        a, b = x[..., 0:d:2], x[..., 1:d:2]
        out[..., 0:d:2] = a * cos - b * sin
        out[..., 1:d:2] = a * sin + b * cos
    return out


class Oracle:
    """A float64 decoder for the GGUF table: `md` the metadata, `get(name)` a tensor as float64 in
    NumPy order (or None). Traits come from the architecture as llama.cpp reads it; `off` names
    traits to switch off (for the ablation checks)."""

    def __init__(self, md, get, n_ctx, off=(), dtypes=None, act_quant=frozenset()):
        self.get, self.off = get, set(off)
        # weights' gguf type names, and those whose matmul inputs the engine quantizes (as it reports)
        self.dtypes, self.act_quant = dtypes or {}, act_quant
        arch = md["general.architecture"]
        key = lambda k, d=None: md.get(f"{arch}.{k}", d)  # noqa: E731
        self.dim = int(key("embedding_length"))
        self.n_layers = int(key("block_count"))
        self.n_heads = int(key("attention.head_count"))
        self.n_kv = int(key("attention.head_count_kv", self.n_heads))
        self.hd = int(key("attention.key_length", self.dim // self.n_heads))
        self.hidden = int(key("feed_forward_length"))
        self.eps = float(key("attention.layer_norm_rms_epsilon"))
        gemma = arch in ("gemma", "gemma2", "gemma3")
        # HF: GemmaMLP / Gemma2MLP / Gemma3MLP use gelu_pytorch_tanh; Phi3MLP and llama SiLU
        self.act = gelu_tanh if gemma and "gelu" not in self.off else silu
        # HF: hidden_states * normalizer, normalizer = hidden_size ** 0.5
        self.embed_scale = math.sqrt(self.dim) if gemma and "embed_scale" not in self.off else 1.0
        self.neox = arch != "llama" or bool(md.get("torchless.rope.neox", False))
        if "neox" in self.off:
            self.neox = not self.neox
        self.scale = float(key("attention.scale", 1.0 / math.sqrt(self.hd)))
        if "attn_scale" in self.off:
            self.scale = 1.0 / math.sqrt(self.hd)
        caps = (50.0, 30.0) if arch == "gemma2" else (0.0, 0.0)
        self.attn_cap = float(key("attn_logit_softcapping", caps[0]))
        self.final_cap = float(key("final_logit_softcapping", caps[1]))
        if "softcap" in self.off:
            self.attn_cap = self.final_cap = 0.0
        self.post_norms = arch in ("gemma2", "gemma3") and "post_norms" not in self.off
        # sliding window: W; layer l windowed by the pattern (gemma2 2, gemma3 6: l % n < n - 1)
        window = int(key("attention.sliding_window", 4096 if arch == "gemma2" else 0))
        if arch == "phi3" or "window" in self.off:
            window = 0
        pattern = key("attention.sliding_window_pattern", {"gemma2": 2, "gemma3": 6}.get(arch, 0))
        if isinstance(pattern, (list, tuple, np.ndarray)):
            flags = [bool(p) for p in pattern]
        else:
            n = int(pattern)
            flags = [n <= 0 or l % n < n - 1 for l in range(self.n_layers)]
        self.window = [window if window and f else 0 for f in flags]
        # RoPE: global base + scaling; windowed layers their own base (gemma3: 10000, unscaled)
        rope_dim = int(key("rope.dimension_count", self.hd))
        theta = float(key("rope.freq_base", 10000.0))
        theta_swa = float(key("rope.freq_base_swa", 10000.0 if arch == "gemma3" else theta))
        if "rope_swa" in self.off:
            theta_swa = theta
        factor = float(key("rope.scaling.factor", 1.0)) if key("rope.scaling.type") == "linear" else 1.0
        divisors = np.ones(rope_dim // 2)
        long_, short = get("rope_factors_long.weight"), get("rope_factors_short.weight")
        orig = int(key("rope.scaling.original_context_length", key("context_length")))
        if long_ is not None and "longrope" not in self.off:
            # llama.cpp get_rope_factors: long when the context exceeds the original length
            divisors = long_ if n_ctx > orig else short
        self.attn_factor = float(key("rope.scaling.attn_factor", 1.0)) if "attn_factor" not in self.off else 1.0
        base = theta ** (-np.arange(0, rope_dim, 2) / rope_dim) / divisors
        swa_scaled = arch != "gemma3" or "rope_swa" in self.off
        self.inv_freq = [(theta_swa ** (-np.arange(0, rope_dim, 2) / rope_dim) / divisors / (factor if swa_scaled else 1.0))
                         if w else base / factor for w in self.window]
        self.rope_dim = rope_dim
        self.k = [None] * self.n_layers
        self.v = [None] * self.n_layers
        self.pos = 0

    def w(self, name):
        return self.get(name)

    def mm(self, x, name, w=None):
        """x @ W.T for weight `name` (or its rows w), the input quantized as the engine does."""
        dt = self.dtypes.get(name)
        if dt in self.act_quant:
            x = quantize_act(x, dt)
        return x @ (self.w(name) if w is None else w).T

    def layer_qkv(self, l, h):
        name = f"blk.{l}.attn_qkv.weight"
        qkv = self.w(name)
        if qkv is not None:
            y = self.mm(h, name, qkv)
            q_dim, kv_dim = self.n_heads * self.hd, self.n_kv * self.hd
            return y[:, :q_dim], y[:, q_dim : q_dim + kv_dim], y[:, q_dim + kv_dim :]
        return tuple(self.mm(h, f"blk.{l}.attn_{p}.weight") for p in "qkv")

    def layer_gate_up(self, l, h):
        if self.w(f"blk.{l}.ffn_gate.weight") is None:  # phi3: gate_up_proj chunked into gate, up
            y = self.mm(h, f"blk.{l}.ffn_up.weight")
            return y[:, : self.hidden], y[:, self.hidden :]
        return self.mm(h, f"blk.{l}.ffn_gate.weight"), self.mm(h, f"blk.{l}.ffn_up.weight")

    def forward(self, tokens):
        """Logits (len(tokens), n_vocab) for the next positions of the one sequence."""
        n, p0 = len(tokens), self.pos
        pos = np.arange(p0, p0 + n)
        x = self.embed(tokens) * self.embed_scale
        for l in range(self.n_layers):
            h = rms_norm(x, self.w(f"blk.{l}.attn_norm.weight"), self.eps)
            q, k, v = self.layer_qkv(l, h)
            q = q.reshape(n, self.n_heads, self.hd)
            k = k.reshape(n, self.n_kv, self.hd)
            v = v.reshape(n, self.n_kv, self.hd)
            qn, kn = self.w(f"blk.{l}.attn_q_norm.weight"), self.w(f"blk.{l}.attn_k_norm.weight")
            if qn is not None and "qk_norm" not in self.off:
                q, k = rms_norm(q, qn, self.eps), rms_norm(k, kn, self.eps)
            ang = pos[:, None] * self.inv_freq[l][None, :]
            cos = (np.cos(ang) * self.attn_factor)[:, None, :]
            sin = (np.sin(ang) * self.attn_factor)[:, None, :]
            q = rotate(q, cos, sin, self.neox)
            k = rotate(k, cos, sin, self.neox)
            self.k[l] = k if self.k[l] is None else np.concatenate([self.k[l], k])
            self.v[l] = v if self.v[l] is None else np.concatenate([self.v[l], v])
            K, V = self.k[l], self.v[l]
            kpos = np.arange(K.shape[0])
            out = np.zeros((n, self.n_heads, self.hd))
            group = self.n_heads // self.n_kv
            for hh in range(self.n_heads):
                s = q[:, hh, :] @ K[:, hh // group, :].T * self.scale
                if self.attn_cap:
                    s = self.attn_cap * np.tanh(s / self.attn_cap)
                allowed = kpos[None, :] <= pos[:, None]
                if self.window[l]:
                    allowed &= kpos[None, :] > pos[:, None] - self.window[l]
                s = np.where(allowed, s, -np.inf)
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                out[:, hh, :] = s @ V[:, hh // group, :]
            o = self.mm(out.reshape(n, -1), f"blk.{l}.attn_output.weight")
            if self.post_norms:
                o = rms_norm(o, self.w(f"blk.{l}.post_attention_norm.weight"), self.eps)
            x = x + o
            h = rms_norm(x, self.w(f"blk.{l}.ffn_norm.weight"), self.eps)
            gate, up = self.layer_gate_up(l, h)
            f = self.mm(self.act(gate) * up, f"blk.{l}.ffn_down.weight")
            if self.post_norms:
                f = rms_norm(f, self.w(f"blk.{l}.post_ffw_norm.weight"), self.eps)
            x = x + f
        self.pos += n
        z = self.head(rms_norm(x, self.w("output_norm.weight"), self.eps))
        if self.final_cap:
            z = self.final_cap * np.tanh(z / self.final_cap)
        return z

    def embed(self, tokens):
        return self.w("token_embd.weight")[np.asarray(tokens)]

    def head(self, x):
        return self.mm(x, "output.weight" if self.w("output.weight") is not None else "token_embd.weight")


def normwise(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


# ----------------------------------------------------------------------------- synthetic models

DIM, N_HEADS, N_KV, HIDDEN = 64, 4, 2, 96
WINDOW = 5

# variant -> (arch, layers, head_dim, extra metadata (suffixes after "{arch}."), traits to ablate)
VARIANTS = {
    # GeGLU, sqrt(dim) embeddings, NEOX, BOS
    "gemma": ("gemma", 2, 16, {}, ["gelu", "embed_scale", "neox"]),
    # + post norms, soft-capping (small caps so they matter on O(1) scores), alternating window
    "gemma2": ("gemma2", 3, 16, {"attn_logit_softcapping": Value(1.5, "float32"),
                                 "final_logit_softcapping": Value(4.0, "float32"),
                                 "attention.sliding_window": Value(WINDOW, "uint32")},
               ["post_norms", "softcap", "window", "gelu"]),
    # + q/k norm, 5 local : 1 global (layer 5 global), local base 10000 unscaled, global base 1e6
    # with linear scaling 8, head_dim != dim / n_heads, attention.scale from the file
    "gemma3": ("gemma3", 7, 24, {"attention.sliding_window": Value(WINDOW, "uint32"),
                                 "rope.scaling.type": "linear", "rope.scaling.factor": Value(8.0, "float32"),
                                 "attention.scale": Value(0.15, "float32")},
               ["qk_norm", "window", "rope_swa", "attn_scale", "post_norms"]),
    # fused qkv and gate-up, LongRoPE long/short divisors and the magnitude factor
    "phi3": ("phi3", 2, 16, {"rope.scaling.original_context_length": Value(64, "uint32"),
                             "rope.scaling.attn_factor": Value(1.25, "float32"),
                             "attention.sliding_window": Value(3, "uint32")},  # ignored, as llama.cpp does
             ["longrope", "attn_factor"]),
    # Mistral-style: every layer windowed
    "llama-swa": ("llama", 2, 16, {"attention.sliding_window": Value(WINDOW, "uint32")}, ["window"]),
    # an explicit per-layer pattern (array of bools): layer 0 windowed, layer 1 global
    "llama-swa-array": ("llama", 2, 16, {"attention.sliding_window": Value(WINDOW, "uint32"),
                                         "attention.sliding_window_pattern": Value([True, False], "array[bool]")},
                        ["window"]),
    # q/k rows in rotate-half order on a llama file (HF folders)
    "llama-neox": ("llama", 2, 16, {}, ["neox"]),
}


def make(variant, rng):
    """(metadata, float32 weights in NumPy order) of a seeded random model of `variant`."""
    arch, layers, hd, extra, _ = VARIANTS[variant]
    tokens, scores, types = synth.vocabulary()
    n_vocab = len(tokens)
    q_dim, kv_dim = N_HEADS * hd, N_KV * hd

    def lin(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": rng.standard_normal((n_vocab, DIM)).astype(np.float32),
         "output_norm.weight": norm(DIM)}
    if arch in ("llama", "phi3"):
        w["output.weight"] = lin(n_vocab, DIM)
    for l in range(layers):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(DIM)
        if arch == "phi3":
            w[p + "attn_qkv.weight"] = lin(q_dim + 2 * kv_dim, DIM)
        else:
            w[p + "attn_q.weight"] = lin(q_dim, DIM)
            w[p + "attn_k.weight"] = lin(kv_dim, DIM)
            w[p + "attn_v.weight"] = lin(kv_dim, DIM)
        if arch == "gemma3":
            w[p + "attn_q_norm.weight"] = norm(hd)
            w[p + "attn_k_norm.weight"] = norm(hd)
        w[p + "attn_output.weight"] = lin(DIM, q_dim)
        w[p + "ffn_norm.weight"] = norm(DIM)
        if arch == "phi3":
            w[p + "ffn_up.weight"] = lin(2 * HIDDEN, DIM)
        else:
            w[p + "ffn_gate.weight"] = lin(HIDDEN, DIM)
            w[p + "ffn_up.weight"] = lin(HIDDEN, DIM)
        w[p + "ffn_down.weight"] = lin(DIM, HIDDEN)
        if arch in ("gemma2", "gemma3"):
            w[p + "post_attention_norm.weight"] = norm(DIM)
            w[p + "post_ffw_norm.weight"] = norm(DIM)
    if arch == "phi3":
        w["rope_factors_long.weight"] = rng.uniform(1.0, 8.0, hd // 2).astype(np.float32)
        w["rope_factors_short.weight"] = rng.uniform(1.0, 1.5, hd // 2).astype(np.float32)

    u32 = lambda x: Value(int(x), "uint32")  # noqa: E731
    md = {
        "general.architecture": arch,
        f"{arch}.context_length": u32(512),
        f"{arch}.embedding_length": u32(DIM),
        f"{arch}.block_count": u32(layers),
        f"{arch}.feed_forward_length": u32(HIDDEN),
        f"{arch}.attention.head_count": u32(N_HEADS),
        f"{arch}.attention.head_count_kv": u32(N_KV),
        f"{arch}.attention.key_length": u32(hd),
        f"{arch}.attention.value_length": u32(hd),
        f"{arch}.rope.freq_base": Value(1e6 if arch.startswith("gemma") else 10000.0, "float32"),
        f"{arch}.attention.layer_norm_rms_epsilon": Value(1e-6, "float32"),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": Value(tokens, "array[string]"),
        "tokenizer.ggml.scores": Value(scores, "array[float32]"),
        "tokenizer.ggml.token_type": Value(types, "array[int32]"),
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
    }
    if arch.startswith("gemma"):
        md["tokenizer.ggml.add_bos_token"] = True
    if variant == "llama-neox":
        md["torchless.rope.neox"] = True
    for k, v in extra.items():
        md[f"{arch}.{k}"] = v
    return md, w


def plain(md):
    """Metadata values as plain Python (what the oracle reads)."""
    return {k: (v.value if isinstance(v, Value) else v) for k, v in md.items()}


def write(tmp_path, variant, rng):
    md, w = make(variant, rng)
    path = tmp_path / f"{variant}.gguf"
    torchless.gguf.write(path, md, w)
    return path, plain(md), {k: v.astype(np.float64) for k, v in w.items()}


def oracle(md, w, n_ctx, off=(), dtypes=None, act_quant=frozenset()):
    return Oracle(md, w.get, n_ctx, off, dtypes, act_quant)


def run_both(path, md, w, rng, n_ctx=256, off=(), dtypes=None):
    """Engine and oracle on a 24-token prefill, a 4-token chunk and 2 single tokens (positions
    past the window, so windowed layers drop keys); returns (engine logits, oracle logits).
    With `dtypes` (weight name: gguf type) the oracle quantizes matmul inputs as the engine says."""
    n_vocab = w["token_embd.weight"].shape[0]
    m = torchless.Model(str(path), max_seq_len=n_ctx, kv_dtype="f32")
    ref = oracle(md, w, n_ctx, off, dtypes, frozenset(m.config["activation_quant"]))
    toks = [int(t) for t in rng.integers(0, n_vocab, 30)]
    got, want = [], []
    for start, end in [(0, 24), (24, 28), (28, 29), (29, 30)]:
        got.append(m.forward(toks[start:end], start, 0))
        want.append(ref.forward(toks[start:end]))
    return np.concatenate(got), np.concatenate(want), m


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_synthetic_variant_matches_float64_oracle(variant, tmp_path, rng):
    path, md, w = write(tmp_path, variant, rng)
    got, want, m = run_both(path, md, w, rng)
    assert m.config["arch"] == VARIANTS[variant][0]
    assert np.all(np.isfinite(got))
    err = normwise(got, want)
    assert err.max() <= TOL, f"{variant}: normwise error {err.max():.3g} > {TOL} (rows {np.array2string(err, precision=2)})"


@pytest.mark.parametrize("variant,trait", [(v, t) for v, spec in VARIANTS.items() for t in spec[4]])
def test_oracle_without_a_trait_misses_the_engine(variant, trait, tmp_path, rng):
    """The comparison above can fail: with any one trait switched off in the oracle the error
    is far above the bound (so the engine really applies the trait)."""
    path, md, w = write(tmp_path, variant, rng)
    got, want, _ = run_both(path, md, w, rng, off=[trait])
    assert normwise(got, want).max() > ABLATED, f"{variant} without {trait} still matches"


def test_windowed_sequences_decoded_in_one_batch_match_each_alone(tmp_path, rng):
    """gemma3 (windowed and global layers, two RoPE tables): two sequences at different
    positions, both past the window, decoded in one batch, then mixed with a third one's prefill."""
    path, md, w = write(tmp_path, "gemma3", rng)
    m = torchless.Model(str(path), max_seq_len=64, max_batch_size=3, kv_dtype="f32")
    refs = [oracle(md, w, 64) for _ in range(3)]
    a, b, c = ([int(t) for t in rng.integers(0, 288, n)] for n in (9, 14, 6))
    m.forward(a[:8], 0, 0)
    m.forward(b[:13], 0, 1)
    refs[0].forward(a[:8])
    refs[1].forward(b[:13])
    got = m.forward_batch([a[8], b[13]] + c, [8, 13] + list(range(6)), [0, 1] + [2] * 6)
    want = np.concatenate([refs[0].forward([a[8]]), refs[1].forward([b[13]]), refs[2].forward(c)])
    assert normwise(got, want).max() <= TOL


@pytest.mark.parametrize("variant", ["phi3", "gemma3"])
def test_quantized_variant_matches_oracle_on_dequantized_weights(variant, tmp_path, rng):
    """Q8_0 matrices: the fused phi3 projections are used as row views of quantized blocks; the
    oracle runs on the file's weights as the `gguf` package dequantizes them."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    md, w = make(variant, rng)
    tensors = {k: ("q8_0", torchless.quantize(v, "q8_0"), v.shape) if v.ndim == 2 else v for k, v in w.items()}
    path = tmp_path / f"{variant}-q8_0.gguf"
    torchless.gguf.write(path, md, tensors)
    deq = {}
    for t in GGUFReader(str(path)).tensors:
        a = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64)
        deq[t.name] = a.reshape([int(d) for d in reversed(t.shape)]) if len(t.shape) > 1 else a.reshape(-1)
    assert not np.array_equal(deq["blk.0.ffn_down.weight"], w["blk.0.ffn_down.weight"])  # really quantized
    dtypes = {k: "Q8_0" for k, v in w.items() if v.ndim == 2}
    got, want, m = run_both(path, plain(md), deq, rng, dtypes=dtypes)
    err = normwise(got, want)
    tol = TOL_ACT if "Q8_0" in m.config["activation_quant"] else TOL
    assert err.max() <= tol, f"{variant} q8_0: normwise error {err.max():.3g}"


def test_phi3_uses_short_factors_in_a_context_within_the_original_length(tmp_path, rng):
    path, md, w = write(tmp_path, "phi3", rng)
    m = torchless.Model(str(path), max_seq_len=64, kv_dtype="f32")  # 64 <= original 64: short factors
    toks = [int(t) for t in rng.integers(0, 288, 20)]
    got = m.forward(toks, 0, 0)
    assert normwise(got, oracle(md, w, 64).forward(toks)).max() <= TOL
    assert normwise(got, oracle(md, w, 65).forward(toks)).max() > ABLATED  # the long ones differ


def test_config_reports_traits_and_llama_cpp_defaults(tmp_path, rng):
    md, w = make("gemma2", rng)
    for k in ("attn_logit_softcapping", "final_logit_softcapping", "attention.sliding_window"):
        del md[f"gemma2.{k}"]
    torchless.gguf.write(tmp_path / "g2.gguf", md, w)
    c = torchless.Model(str(tmp_path / "g2.gguf"), max_seq_len=32).config
    assert (c["attn_softcap"], c["final_softcap"], c["sliding_window"]) == (50.0, 30.0, 4096)
    assert c["n_windowed_layers"] == 2 and c["post_norms"] and c["activation"] == "gelu_tanh"  # layers 0, 2
    assert c["embed_scale"] == pytest.approx(math.sqrt(DIM)) and c["attn_scale"] == pytest.approx(0.25)

    md, w = make("phi3", rng)
    del md["phi3.rope.scaling.attn_factor"]
    torchless.gguf.write(tmp_path / "p3.gguf", md, w)
    c = torchless.Model(str(tmp_path / "p3.gguf"), max_seq_len=32).config
    # llama.cpp's converter: sqrt(1 + ln(512 / 64) / ln(64)); no window for phi3
    assert c["rope_attn_factor"] == pytest.approx(math.sqrt(1 + math.log(8) / math.log(64)))
    assert c["fused_qkv"] and c["fused_gate_up"] and c["sliding_window"] == 0

    md, w = make("gemma3", rng)
    torchless.gguf.write(tmp_path / "g3.gguf", md, w)
    c = torchless.Model(str(tmp_path / "g3.gguf"), max_seq_len=32).config
    assert c["n_windowed_layers"] == 6 and c["rope_theta_swa"] == 10000.0 and c["qk_norm"]
    assert c["attn_softcap"] == 0 and c["final_softcap"] == 0


def test_unknown_architecture_lists_every_supported_one(tmp_path, rng):
    md, w = make("llama-swa", rng)
    md = {k.replace("llama.", "mamba."): v for k, v in md.items()}
    md["general.architecture"] = "mamba"
    torchless.gguf.write(tmp_path / "u.gguf", md, w)
    with pytest.raises(Exception) as e:
        torchless.Model(str(tmp_path / "u.gguf"))
    for arch in ("llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"):
        assert arch in str(e.value)
    assert "mamba" in str(e.value)


def test_bad_sliding_window_pattern_is_an_error(tmp_path, rng):
    md, w = make("llama-swa-array", rng)
    md["llama.attention.sliding_window_pattern"] = Value([True, False, True], "array[bool]")  # 3 flags, 2 layers
    torchless.gguf.write(tmp_path / "b.gguf", md, w)
    with pytest.raises(Exception, match="sliding_window_pattern"):
        torchless.Model(str(tmp_path / "b.gguf"))


# ----------------------------------------------------------------------------- Gemma 3 270M


class GGUFOracle(Oracle):
    """The oracle on a real GGUF file: tensors dequantized by the `gguf` package when first used;
    the 262144-row embedding only for the tokens fed and the vocabulary rows asked for."""

    def __init__(self, path, n_ctx, vocab_rows, act_quant=frozenset()):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        self.reader = GGUFReader(str(path))
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.dequantize = dequantize
        self.cache = {}
        self.vocab_rows = np.asarray(vocab_rows)
        md = {}
        for k, f in self.reader.fields.items():
            if not k.startswith("tokenizer.") and not k.startswith("GGUF."):
                md[k] = f.contents()
        dtypes = {t.name: t.tensor_type.name for t in self.reader.tensors}
        super().__init__(md, self.tensor, n_ctx, dtypes=dtypes, act_quant=act_quant)

    def rows(self, name, idx):
        t = self.tensors[name]
        return self.dequantize(np.asarray(t.data)[idx], t.tensor_type).astype(np.float64)

    def tensor(self, name):
        if name not in self.tensors:
            return None
        if name not in self.cache:
            t = self.tensors[name]
            a = self.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64)
            self.cache[name] = a.reshape([int(d) for d in reversed(t.shape)]) if a.ndim > 1 or len(t.shape) > 1 else a
        return self.cache[name]

    def embed(self, tokens):
        return self.rows("token_embd.weight", np.asarray(tokens))

    def head(self, x):  # tied: the embedding rows of the vocabulary subset
        return self.mm(x, "token_embd.weight", self.rows("token_embd.weight", self.vocab_rows))


@pytest.fixture(scope="module")
def gemma3(gemma3_path):
    return torchless.Model(str(gemma3_path), max_seq_len=256, kv_dtype="f32")


def test_gemma3_270m_logits_match_float64_oracle_on_its_dequantized_weights(gemma3, gemma3_path, rng):
    gguf = pytest.importorskip("gguf")  # noqa: F841
    ids = gemma3.encode_prompt("The capital of France is")
    assert ids[0] == 2  # BOS, required by Gemma
    gemma3.reset()
    got = gemma3.forward(ids, 0, 0)
    top = np.argsort(got[-1])[-64:]
    cols = np.unique(np.concatenate([top, rng.choice(got.shape[1], 2048, replace=False)]))
    aq = frozenset(gemma3.config["activation_quant"])
    ref = GGUFOracle(gemma3_path, 256, cols, act_quant=aq)
    assert ref.window.count(512) == 15 and ref.window[5] == 0  # 5 local : 1 global
    want = ref.forward(ids)
    err = normwise(got[:, cols], want)
    # With quantized activations the logits of this 18-layer model are chaotic at the float32
    # level: the oracle against itself with 1e-7 relative noise on every matmul input moves by
    # 0.044..0.125 (5 noise draws; the engine: 0.093), top-1 unchanged. Hence 0.25 here.
    tol = 0.25 if aq else TOL
    assert err.max() <= tol, f"normwise error {err.max():.3g} (rows {np.array2string(err, precision=2)})"
    assert int(cols[np.argmax(want[-1])]) == int(np.argmax(got[-1]))


def test_gemma3_270m_with_a_q8_0_kv_cache_knows_capitals(gemma3_path):
    """The same known answers with keys and values in Q8_0 (heads of 256, 8 blocks each)."""
    m = torchless.Model(str(gemma3_path), max_seq_len=256, kv_dtype="q8_0", device="cpu")
    for prompt, want in [("Question: What is the capital of France?\nAnswer:", " Paris"),
                         ("The capital of France is Paris. The capital of Germany is", " Berlin")]:
        m.reset()
        out = m.generate(prompt, max_new_tokens=8, temperature=0)
        assert out.startswith(want), out


def test_gemma3_270m_greedy_knows_capitals(gemma3):
    """Known answers of the base model, greedy, with BOS. (For the bare "The capital of France is"
    this Q4_K_M file's greedy continuation is " the capital of the country of France. ...", with
    " Paris" third at the first step, 0.8 below " the": the logits test above checks those
    numbers against the float64 oracle, so a prompt that asks is used here.)"""
    gemma3.reset()
    out = gemma3.generate("Question: What is the capital of France?\nAnswer:", max_new_tokens=8, temperature=0)
    assert out.startswith(" Paris"), out
    gemma3.reset()
    out = gemma3.generate("The capital of France is Paris. The capital of Germany is", max_new_tokens=8,
                          temperature=0)
    assert out.startswith(" Berlin"), out
    gemma3.reset()
    ids = gemma3.encode_prompt("The capital of France is")
    top3 = np.argsort(gemma3.forward(ids, 0, 0)[-1])[-3:]
    assert gemma3.tokenizer.encode(" Paris", add_bos=False)[0] in top3


# ----------------------------------------------------------------------------- Gemma 3 tokenizer


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values are sign-extended to 64 bits
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    key = _varint(num << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def sentencepiece_proto(tokens, scores, types, unk, bos, eos, pad) -> bytes:
    """A SentencePiece ModelProto (sentencepiece_model.proto, written by hand: the protobuf
    package is not needed) for a BPE vocabulary as GGUF stores it. Gemma's tokenizer.model:
    BPE, byte_fallback, identity normalization, no dummy prefix, extra whitespace kept, whitespace-only
    pieces allowed (the trainer flags transformers' GemmaConverter lists)."""
    parts = []
    for i, (piece, score, ty) in enumerate(zip(tokens, scores, types)):
        ty = 2 if i == unk else int(ty)  # GGUF marks Gemma's <unk> as control; SentencePiece needs UNKNOWN
        if ty == 4:  # llama.cpp's converter pre-normalizes user-defined pieces ("▁▁" -> "  "): undo it
            piece = piece.replace(" ", "\u2581")
        msg = _field(1, 2, piece.encode("utf-8")) + _field(2, 5, struct.pack("<f", float(score))) + \
            _field(3, 0, _varint(ty))
        parts.append(_field(1, 2, msg))
    trainer = (_field(3, 0, _varint(2))            # model_type = BPE
               + _field(21, 0, _varint(1))         # split_by_unicode_script
               + _field(22, 0, _varint(1))         # split_by_whitespace
               + _field(23, 0, _varint(1))         # split_by_number
               + _field(25, 0, _varint(1))         # split_digits
               + _field(26, 0, _varint(1))         # allow_whitespace_only_pieces ("▁▁" runs for code)
               + _field(35, 0, _varint(1))         # byte_fallback
               + _field(40, 0, _varint(unk)) + _field(41, 0, _varint(bos))
               + _field(42, 0, _varint(eos)) + _field(43, 0, _varint(pad)))
    normalizer = (_field(1, 2, b"identity")
                  + _field(3, 0, _varint(0))       # add_dummy_prefix = false
                  + _field(4, 0, _varint(0))       # remove_extra_whitespaces = false
                  + _field(5, 0, _varint(1)))      # escape_whitespaces = true
    parts.append(_field(2, 2, trainer))
    parts.append(_field(3, 2, normalizer))
    return b"".join(parts)


CORPUS = json.loads((Path(__file__).parent / "data" / "tokenizer_corpus.json").read_text(encoding="utf-8"))


def test_gemma3_tokenizer_matches_sentencepiece_on_corpus(gemma3_path):
    spm = pytest.importorskip("sentencepiece")
    from gguf import GGUFReader

    f = GGUFReader(str(gemma3_path)).fields
    ids = {k: int(f[f"tokenizer.ggml.{k}_token_id"].contents()) for k in ("unknown", "bos", "eos", "padding")}
    proto = sentencepiece_proto(f["tokenizer.ggml.tokens"].contents(), f["tokenizer.ggml.scores"].contents(),
                                f["tokenizer.ggml.token_type"].contents(), ids["unknown"], ids["bos"], ids["eos"],
                                ids["padding"])
    oracle = spm.SentencePieceProcessor(model_proto=proto)
    assert oracle.get_piece_size() == 262144
    tok = torchless.Tokenizer(gemma3_path)
    assert len(CORPUS) >= 500
    # A literal U+2581 in the text is a space to SentencePiece, so "▁▁" meets the user-defined
    # whitespace piece; in the GGUF table that piece is "  " (pre-normalized), which llama.cpp, and
    # we, match in the raw text only, leaving a literal "▁▁" as two "▁" pieces. Those strings differ
    # by construction of this oracle, not of the tokenizer, and are left out.
    corpus = [s for s in CORPUS if "\u2581" not in s]
    assert len(CORPUS) - len(corpus) <= 5
    bad = [(s, oracle.encode(s), tok.encode(s, add_bos=False)) for s in corpus
           if oracle.encode(s) != tok.encode(s, add_bos=False)]
    assert not bad, f"{len(bad)} of {len(CORPUS)} differ, first: {bad[0]!r}"
    assert tok.encode("The capital of France is") == [ids["bos"]] + oracle.encode("The capital of France is")
