"""Hugging Face folders into the reference's inputs (GGUF names, GGUF semantics), independent of
csrc/: the same `ReferenceModel` then checks HF folders and GGUF files.

    cfg_dict, sd = read_folder(path)             # config.json + *.safetensors (F32/F16/BF16, sharded)
    config, weights = from_hf(cfg_dict, sd)      # reference Config + GGUF-named float64 arrays
    ReferenceModel(config, weights)              # or ReferenceModel.from_hf(path)

What changes on the way (as llama.cpp's `convert_hf_to_gguf.py` does it, or as the table's
extension keys state it, docs/architectures.md):
- names: `model.layers.N.self_attn.q_proj.weight` → `blk.N.attn_q.weight`, ... (Gemma 2/3:
  `post_attention_layernorm` → `post_attention_norm`, `pre_feedforward_layernorm` → `ffn_norm`,
  `post_feedforward_layernorm` → `post_ffw_norm`; Phi-3: `qkv_proj` → `attn_qkv`,
  `gate_up_proj` → `ffn_up`);
- Gemma norms: HF computes x·(1 + w); the GGUF weight is 1 + w (every RMSNorm, q/k norms
  included);
- LLaMA/Mistral q/k rows are in rotate-half order: kept as they are with NEOX RoPE (what the
  HF reader does with `torchless.rope.neox`), or, with `gguf_order=True`, un-permuted to
  adjacent pairs (`LlamaModel.permute`) and run with NORM RoPE, as a GGUF `llama` file holds
  them;
- Phi-3 LongRoPE factors from the config become `rope_factors_short.weight` /
  `rope_factors_long.weight`.

Both config schemas are read: transformers 4 (`rope_theta`, `rope_scaling`,
`rope_local_base_freq`, `sliding_window_pattern`) and transformers 5 (`rope_parameters`, per
layer type for Gemma 3, `layer_types`).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from .forward import Config, longrope_attn_factor

__all__ = ["ARCHS", "read_folder", "read_safetensors", "from_hf", "config_from_hf", "hf_to_gguf_name",
           "permute_rotate_half_to_pairs", "bf16_to_f32", "f32_to_bf16"]

# HF `architectures[0]` → GGUF `general.architecture`
ARCHS = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3", "Phi3ForCausalLM": "phi3",
}
GEMMA = ("gemma", "gemma2", "gemma3")


# ----------------------------------------------------------------------------- safetensors

def bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) → float32: the bits are the top half of a float32."""
    return (np.asarray(u16, np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits, rounding to nearest even (NaN stays NaN)."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, np.float32))
    return np.where(nan, np.uint16(0x7FC0), r).astype(np.uint16)


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}


def read_safetensors(path) -> dict:
    """{name: float64 array} from one safetensors file (8-byte little-endian header length,
    JSON header, then the data; offsets relative to the data start)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=_ST_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            arr = bf16_to_f32(arr)
        out[name] = arr.astype(np.float64).reshape(info["shape"])
    return out


def read_folder(path):
    """(config dict, {HF name: float64 array}) of an HF folder, single file or sharded."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for f in files:
        sd.update(read_safetensors(path / f))
    return cfg, sd


# ----------------------------------------------------------------------------- config

def _text_config(cfg: dict) -> dict:
    return cfg.get("text_config", cfg) if "Gemma3ForConditionalGeneration" in cfg.get("architectures", []) else cfg


def arch_of(cfg: dict) -> str:
    names = cfg.get("architectures") or []
    for n in names:
        if n in ARCHS:
            return ARCHS[n]
    mt = cfg.get("model_type", "")
    return {"gemma3_text": "gemma3", "mistral": "llama"}.get(mt, mt)


def _rope_params(cfg: dict, layer_type: str | None = None) -> dict:
    """The RoPE parameters {rope_theta, rope_type, factor, ...} of the global layers (or of
    `layer_type`), from either schema."""
    rp = cfg.get("rope_parameters")
    if rp:                                          # transformers 5
        if layer_type and layer_type in rp:
            return dict(rp[layer_type])
        if "full_attention" in rp:
            return dict(rp["full_attention"])
        return dict(rp)
    d = dict(cfg.get("rope_scaling") or {})         # transformers 4
    if "type" in d and "rope_type" not in d:
        d["rope_type"] = d.pop("type")
    gemma3 = arch_of(cfg) == "gemma3"
    d.setdefault("rope_theta", cfg.get("rope_theta", 1e6 if gemma3 else 10000.0))
    if layer_type == "sliding_attention" and gemma3:    # rope_scaling is for the global layers
        d = {"rope_type": "default", "rope_theta": cfg.get("rope_local_base_freq", 10000.0)}
    return d


def layer_types(cfg: dict, arch: str) -> list[str]:
    """Per layer "sliding_attention" or "full_attention", as transformers decides it."""
    n = cfg["num_hidden_layers"]
    if cfg.get("layer_types"):
        return list(cfg["layer_types"])
    win = cfg.get("sliding_window")
    if arch == "gemma2":
        return ["sliding_attention" if l % 2 == 0 else "full_attention" for l in range(n)]
    if arch == "gemma3":
        p = cfg.get("sliding_window_pattern", 6)
        return ["sliding_attention" if (l + 1) % p else "full_attention" for l in range(n)]
    if arch in ("qwen2", "qwen3"):
        use = cfg.get("use_sliding_window", False) and win
        mwl = cfg.get("max_window_layers", n)
        return ["sliding_attention" if use and l >= mwl else "full_attention" for l in range(n)]
    return ["sliding_attention" if win else "full_attention" for _ in range(n)]


def config_from_hf(cfg: dict, *, tied: bool | None = None, gguf_order: bool = False) -> Config:
    """The reference Config of an HF config.json dict."""
    cfg = _text_config(cfg)
    arch = arch_of(cfg)
    dim = cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or dim // n_heads
    rp = _rope_params(cfg)
    rtype = rp.get("rope_type", "default") or "default"
    types = layer_types(cfg, arch)
    win = cfg.get("sliding_window") or 0
    if not any(t == "sliding_attention" for t in types):
        win = 0
    c = Config(
        arch=arch, n_vocab=cfg["vocab_size"], dim=dim, n_layers=cfg["num_hidden_layers"],
        n_heads=n_heads, n_kv_heads=cfg.get("num_key_value_heads") or n_heads, head_dim=head_dim,
        hidden_dim=cfg["intermediate_size"], norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=float(rp.get("rope_theta", 10000.0)),
        rope_style="norm" if arch == "llama" and gguf_order else "neox",
        rope_dim=int(head_dim * (rp.get("partial_rotary_factor") or cfg.get("partial_rotary_factor") or 1.0)),
        qk_norm=arch in ("qwen3", "gemma3"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", arch in GEMMA)) if tied is None else tied,
        act="gelu_tanh" if arch in GEMMA else "silu",
        embed_scale=math.sqrt(dim) if arch in GEMMA else 0.0,
        post_norms=arch in ("gemma2", "gemma3"),
        sliding_window=int(win),
        swa_pattern=[t == "sliding_attention" for t in types] if win else None,
    )
    if arch in GEMMA and cfg.get("hidden_activation", cfg.get("hidden_act")) in ("silu", "relu"):
        raise ValueError(f"gemma with activation {cfg.get('hidden_activation')!r}: not supported")
    if arch in ("gemma2", "gemma3"):
        c.attn_scale = float(cfg.get("query_pre_attn_scalar") or head_dim) ** -0.5
        c.attn_softcap = float(cfg.get("attn_logit_softcapping") or 0.0)
        c.final_softcap = float(cfg.get("final_logit_softcapping") or 0.0)
    if rtype == "linear":
        c.rope_scaling, c.rope_factor = "linear", float(rp["factor"])
    elif rtype == "llama3":
        c.rope_scaling, c.rope_factor = "llama3", float(rp["factor"])
        c.rope_low_freq_factor = float(rp["low_freq_factor"])
        c.rope_high_freq_factor = float(rp["high_freq_factor"])
        c.rope_orig_ctx = int(rp["original_max_position_embeddings"])
    elif rtype in ("longrope", "su"):
        # transformers: a top-level original_max_position_embeddings (Phi-3) wins
        ctx = cfg["max_position_embeddings"]
        orig = int(cfg.get("original_max_position_embeddings") or rp.get("original_max_position_embeddings") or ctx)
        c.rope_scaling, c.rope_orig_ctx = "longrope", orig
        af = rp.get("attention_factor")
        if af is None and rp.get("factor"):      # transformers: factor given, no attention_factor
            af = longrope_attn_factor(float(rp["factor"]) * orig, orig)
        c.rope_attn_factor = float(af) if af is not None else longrope_attn_factor(ctx, orig)
    elif rtype != "default":
        raise ValueError(f"rope_type {rtype!r} not supported by the reference")
    if win and arch == "gemma3":
        local = _rope_params(cfg, "sliding_attention")
        c.rope_theta_swa = float(local.get("rope_theta", 10000.0))
        lt = local.get("rope_type", "default")
        c.rope_scaling_swa = "none" if lt == "default" else lt
    return c.finish()


# ----------------------------------------------------------------------------- weights

_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.qkv_proj": "attn_qkv",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "mlp.gate_up_proj": "ffn_up",
}
_LAYER_POST = {  # gemma2/3: four norms per block
    "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}


def hf_to_gguf_name(name: str, arch: str) -> str | None:
    """GGUF tensor name of an HF tensor name (None: not a weight the decoder uses)."""
    for prefix in ("model.language_model.", "language_model."):   # multimodal wrappers
        if name.startswith(prefix):
            name = "model." + name[len(prefix):]
    if name in _GLOBAL:
        return _GLOBAL[name]
    if not name.startswith("model.layers."):
        return None
    rest = name[len("model.layers."):]
    l, rest = rest.split(".", 1)
    mod, kind = rest.rsplit(".", 1)
    table = dict(_LAYER)
    if arch in ("gemma2", "gemma3"):
        table.update(_LAYER_POST)
    else:
        table["post_attention_layernorm"] = "ffn_norm"
    if mod not in table:
        return None
    return f"blk.{l}.{table[mod]}.{kind}"


def permute_rotate_half_to_pairs(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: within each head, rows in rotate-half order (first half,
    second half) become adjacent pairs (row i → 2i, row i + d/2 → 2i + 1)."""
    shape = w.shape
    return w.reshape(n_heads, 2, shape[0] // n_heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def from_hf(cfg: dict, state_dict: dict, *, gguf_order: bool = False):
    """(Config, {GGUF name: float64 array}) from an HF config dict and HF-named tensors."""
    arch = arch_of(_text_config(cfg))
    tied = "lm_head.weight" not in state_dict
    c = config_from_hf(cfg, tied=tied, gguf_order=gguf_order)
    w = {}
    for name, a in state_dict.items():
        g = hf_to_gguf_name(name, arch)
        if g is None:
            continue
        a = np.asarray(a, np.float64)
        if arch in GEMMA and "norm" in g:            # x·(1 + w) in HF, x·w in GGUF
            a = a + 1.0
        if arch == "llama" and gguf_order:
            if g.endswith("attn_q.weight") or g.endswith("attn_q.bias"):
                a = permute_rotate_half_to_pairs(a, c.n_heads)
            elif g.endswith("attn_k.weight") or g.endswith("attn_k.bias"):
                a = permute_rotate_half_to_pairs(a, c.n_kv_heads)
        w[g] = a
    if c.rope_scaling == "longrope":
        rp = _rope_params(_text_config(cfg))
        w["rope_factors_short.weight"] = np.asarray(rp["short_factor"], np.float64)
        w["rope_factors_long.weight"] = np.asarray(rp["long_factor"], np.float64)
    return c, w
