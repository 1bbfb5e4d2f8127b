"""`ModelArgs`: a model's shape and traits, the way Meta's reference `ModelArgs` names them.

    from torchless import ModelArgs
    a = ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256,
                  multiple_of=1024, ffn_dim_multiplier=1.3, rope_theta=500000.0)
    a.resolved_hidden_dim                        # 14336, derived as the reference does
    ModelArgs(hidden_size=576, num_attention_heads=9)   # Hugging Face names work as aliases
    ModelArgs.from_config_file("params.json")    # Meta params.json or HF config.json (or their folder)
    ModelArgs.from_gguf_metadata(torchless.load("model.gguf").metadata)

The C twin is `tl_model_config` (csrc/include/torchless.h). Beyond the reference's fields it has
`hidden_dim` and `head_dim` (None = derive them as the reference does; some models have a
`head_dim` other than `dim / n_heads`) and the traits the engine switches on: `arch`,
`rope_style`, `rope_scaling`, `tie_word_embeddings`, `qkv_bias`, `qk_norm`.

Derived values are read through the `resolved_*` properties (`resolved_hidden_dim`,
`resolved_head_dim`, `resolved_n_kv_heads`, `resolved_rope_style`); the fields themselves keep
None, so a config that was given without a value still says so (and `to_gguf_metadata` writes
`attention.key_length` only where the head size is not the derived one).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _C

__all__ = ["ModelArgs", "SUPPORTED_ARCHS", "HF_MODEL_TYPES"]

SUPPORTED_ARCHS = _C.architectures()  # the engine's one list (csrc/model/config.c)
# Hugging Face `model_type` -> torchless/llama.cpp architecture (mistral is the llama graph)
HF_MODEL_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
ROPE_STYLES = ("norm", "neox")
ROPE_SCALING_TYPES = ("linear", "llama3")
_ROPE_SCALING_KEYS = {
    "linear": {"rope_type", "factor", "original_max_position_embeddings"},
    "llama3": {"rope_type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
}
# Meta's llama3 apply_scaling constants (llama-models), used for params.json's use_scaled_rope
_META_LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192}

# Hugging Face config names accepted by the constructor (`head_dim` is the same in both)
ALIASES = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "hidden_dim",
    "rms_norm_eps": "norm_eps",
    "max_position_embeddings": "max_seq_len",
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _f32(x: float) -> float:
    """The shortest decimal that reads back as the same float32 (1e-05, not 9.99999974e-06)."""
    import numpy as np

    return float(str(np.float32(x)))


@dataclass
class ModelArgs:
    """A model's hyper-parameters, with Meta's reference names and defaults.

    Fields (reference ones first): `dim`, `n_layers`, `n_heads`, `n_kv_heads` (None = `n_heads`),
    `vocab_size` (-1 = "set later", as the reference does before it reads the tokenizer),
    `multiple_of`, `ffn_dim_multiplier`, `norm_eps`, `rope_theta`, `max_batch_size`, `max_seq_len`;
    then `hidden_dim` (None = `int(2 * 4 * dim / 3)`, times `ffn_dim_multiplier` if set, rounded up
    to a multiple of `multiple_of`), `head_dim` (None = `dim // n_heads`), `arch` (one of
    SUPPORTED_ARCHS: "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"), `rope_style`
    (None = by arch: "norm" for llama, "neox" for the others),
    `rope_scaling` (None or {"rope_type": "llama3" | "linear", "factor", "low_freq_factor",
    "high_freq_factor", "original_max_position_embeddings"}), `tie_word_embeddings`, `qkv_bias`,
    `qk_norm` (these three as given: `from_config_file` and `from_gguf_metadata` set them per arch).

    Hugging Face names are accepted as keyword aliases: `hidden_size`, `num_hidden_layers`,
    `num_attention_heads`, `num_key_value_heads`, `intermediate_size`, `rms_norm_eps`,
    `max_position_embeddings` (and `head_dim`). Unknown keywords, or a name given together with
    its alias, raise TypeError. The values are checked on construction (`validate()`); call
    `validate()` again after changing fields in place.
    """

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    vocab_size: int = -1
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_batch_size: int = 32
    max_seq_len: int = 2048
    hidden_dim: int | None = None
    head_dim: int | None = None
    arch: str = "llama"
    rope_style: str | None = None
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False

    def __post_init__(self):
        if self.rope_scaling is not None and isinstance(self.rope_scaling, Mapping):
            self.rope_scaling = dict(self.rope_scaling)  # our own copy
        self.validate()

    # ---- derived values -------------------------------------------------------------------

    @property
    def resolved_n_kv_heads(self) -> int:
        """`n_kv_heads`, or `n_heads` when it is None (plain multi-head attention)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def resolved_head_dim(self) -> int:
        """`head_dim`, or `dim // n_heads` when it is None (the reference's rule)."""
        return self.dim // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def resolved_hidden_dim(self) -> int:
        """`hidden_dim`, or the reference's FeedForward size when it is None."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def resolved_rope_style(self) -> str:
        """`rope_style`, or the architecture's: "norm" (adjacent pairs) for llama, "neox" for the others."""
        if self.rope_style is not None:
            return self.rope_style
        return "norm" if self.arch == "llama" else "neox"

    # ---- checks ---------------------------------------------------------------------------

    def validate(self, require_vocab: bool = False) -> "ModelArgs":
        """Raise ValueError naming the first bad field and its allowed range; return self.

        `vocab_size=-1` ("set later") passes unless `require_vocab` is true."""

        def need_int(name, lo, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not _is_int(v) or v < lo:
                extra = " or None" if allow_none else ""
                raise ValueError(f"{name} must be an integer >= {lo}{extra}, got {v!r}")

        def need_positive(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not _is_real(v) or not math.isfinite(v) or not v > 0:
                extra = " or None" if allow_none else ""
                raise ValueError(f"{name} must be a finite number > 0{extra}, got {v!r}")

        for name in ("dim", "n_layers", "n_heads"):
            need_int(name, 1)
        need_int("n_kv_heads", 1, allow_none=True)
        if self.n_heads % self.resolved_n_kv_heads:
            raise ValueError(f"n_kv_heads must divide n_heads ({self.n_heads}), got {self.n_kv_heads!r}")
        need_int("head_dim", 1, allow_none=True)
        if self.head_dim is None and self.dim % self.n_heads:
            raise ValueError(f"n_heads must divide dim ({self.dim}) when head_dim is None, got {self.n_heads!r}")
        if self.vocab_size != -1 or require_vocab:
            if not _is_int(self.vocab_size) or self.vocab_size < 1:
                allowed = "an integer >= 1" + ("" if require_vocab else " (or -1: set later)")
                raise ValueError(f"vocab_size must be {allowed}, got {self.vocab_size!r}")
        need_int("multiple_of", 1)
        need_positive("ffn_dim_multiplier", allow_none=True)
        need_int("hidden_dim", 1, allow_none=True)
        need_positive("norm_eps")
        need_positive("rope_theta")
        need_int("max_batch_size", 1)
        need_int("max_seq_len", 1)
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"arch must be one of {', '.join(SUPPORTED_ARCHS)}, got {self.arch!r}")
        if self.rope_style is not None and self.rope_style not in ROPE_STYLES:
            raise ValueError(f"rope_style must be None, 'norm' or 'neox', got {self.rope_style!r}")
        for name in ("tie_word_embeddings", "qkv_bias", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        self._validate_rope_scaling()
        return self

    def _validate_rope_scaling(self):
        rs = self.rope_scaling
        if rs is None:
            return
        if not isinstance(rs, Mapping):
            raise ValueError(f"rope_scaling must be None or a dict, got {type(rs).__name__}")
        kind = rs.get("rope_type")
        if kind not in ROPE_SCALING_TYPES:
            raise ValueError(f"rope_scaling['rope_type'] must be one of {', '.join(ROPE_SCALING_TYPES)}, got {kind!r}")
        unknown = sorted(set(rs) - _ROPE_SCALING_KEYS[kind])
        if unknown:
            raise ValueError(f"rope_scaling has keys {unknown} not used by rope_type {kind!r} "
                             f"(allowed: {sorted(_ROPE_SCALING_KEYS[kind])})")
        required = ["factor"] + (["low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
                                 if kind == "llama3" else [])
        for key in required:
            if key not in rs:
                raise ValueError(f"rope_scaling['{key}'] is required for rope_type {kind!r}")
        for key in ("factor", "low_freq_factor", "high_freq_factor"):
            if key in rs and (not _is_real(rs[key]) or not math.isfinite(rs[key]) or not rs[key] > 0):
                raise ValueError(f"rope_scaling['{key}'] must be a finite number > 0, got {rs[key]!r}")
        orig = rs.get("original_max_position_embeddings")
        if orig is not None and (not _is_int(orig) or orig < 1):
            raise ValueError(f"rope_scaling['original_max_position_embeddings'] must be an integer >= 1, got {orig!r}")
        if kind == "llama3" and not rs["high_freq_factor"] > rs["low_freq_factor"]:
            raise ValueError(f"rope_scaling['high_freq_factor'] must be > low_freq_factor "
                             f"({rs['low_freq_factor']!r}), got {rs['high_freq_factor']!r}")

    # ---- config files ---------------------------------------------------------------------

    @classmethod
    def from_config_file(cls, path: str | os.PathLike, **overrides) -> "ModelArgs":
        """Read a Meta `params.json` (keys as the fields) or a LLaMA-family Hugging Face
        `config.json` (model_type llama, mistral, qwen2, qwen3); a folder is searched for
        params.json, then config.json. `overrides` (e.g. max_seq_len, max_batch_size, which the
        reference passes to `ModelArgs` beside the file's params) win over the file."""
        path = os.fspath(path)
        if os.path.isdir(path):
            for name in ("params.json", "config.json"):
                if os.path.isfile(os.path.join(path, name)):
                    path = os.path.join(path, name)
                    break
            else:
                raise FileNotFoundError(f"{path}: no params.json or config.json")
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        if not isinstance(cfg, dict):
            raise ValueError(f"{path}: expected a JSON object")
        if "model_type" in cfg or "hidden_size" in cfg or "architectures" in cfg:
            kwargs = _from_hf_config(cfg, path)
        else:
            kwargs = _from_meta_params(cfg)
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---- GGUF -----------------------------------------------------------------------------

    def to_gguf_metadata(self) -> dict[str, Any]:
        """The model keys of a GGUF file, as llama.cpp names them, with exact types
        (`torchless.gguf.Value`): general.architecture, {arch}.vocab_size (when known),
        context_length, embedding_length, block_count, feed_forward_length,
        attention.head_count(_kv), attention.key_length/value_length (only when head_dim is
        not dim / n_heads), rope.dimension_count, attention.layer_norm_rms_epsilon,
        rope.freq_base and rope.scaling.* (linear: type, factor, original_context_length when
        given; llama3: type, factor, low/high_freq_factor, original_context_length — the keys
        torchless reads; llama.cpp itself stores LLaMA-3 scaling as a `rope_freqs.weight`
        tensor). Bias, q/k norms and tied embeddings live in the tensors, not in metadata; a
        rope_style other than the arch's cannot be stored and raises ValueError."""
        from .gguf import Value

        if self.rope_style is not None and self.rope_style != ("norm" if self.arch == "llama" else "neox"):
            raise ValueError(f"rope_style {self.rope_style!r} cannot be stored in GGUF for arch {self.arch!r} "
                             f"(llama.cpp picks the rope style from the architecture)")
        a = self.arch
        u32 = lambda v: Value(int(v), "uint32")  # noqa: E731
        f32 = lambda v: Value(float(v), "float32")  # noqa: E731
        md: dict[str, Any] = {"general.architecture": a}
        if self.vocab_size >= 1:
            md[f"{a}.vocab_size"] = u32(self.vocab_size)
        md[f"{a}.context_length"] = u32(self.max_seq_len)
        md[f"{a}.embedding_length"] = u32(self.dim)
        md[f"{a}.block_count"] = u32(self.n_layers)
        md[f"{a}.feed_forward_length"] = u32(self.resolved_hidden_dim)
        md[f"{a}.attention.head_count"] = u32(self.n_heads)
        md[f"{a}.attention.head_count_kv"] = u32(self.resolved_n_kv_heads)
        if self.dim % self.n_heads or self.resolved_head_dim != self.dim // self.n_heads:
            md[f"{a}.attention.key_length"] = u32(self.resolved_head_dim)
            md[f"{a}.attention.value_length"] = u32(self.resolved_head_dim)
        md[f"{a}.rope.dimension_count"] = u32(self.resolved_head_dim)
        md[f"{a}.attention.layer_norm_rms_epsilon"] = f32(self.norm_eps)
        md[f"{a}.rope.freq_base"] = f32(self.rope_theta)
        rs = self.rope_scaling
        if rs is not None:
            md[f"{a}.rope.scaling.type"] = rs["rope_type"]
            md[f"{a}.rope.scaling.factor"] = f32(rs["factor"])
            if rs["rope_type"] == "llama3":
                md[f"{a}.rope.scaling.low_freq_factor"] = f32(rs["low_freq_factor"])
                md[f"{a}.rope.scaling.high_freq_factor"] = f32(rs["high_freq_factor"])
            if rs.get("original_max_position_embeddings") is not None:
                md[f"{a}.rope.scaling.original_context_length"] = u32(rs["original_max_position_embeddings"])
        return md

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], tensor_names=None, **overrides) -> "ModelArgs":
        """The inverse of `to_gguf_metadata`, with the engine's defaults for missing keys
        (n_kv_heads = n_heads, context 2048, eps 1e-5, rope base 10000). vocab_size is
        {arch}.vocab_size, else the length of tokenizer.ggml.tokens, else -1. float32 values
        come back as their shortest decimal (1e-05); `Value`-wrapped values (as
        `to_gguf_metadata` gives them) are accepted. qkv_bias / qk_norm follow the arch as the
        engine does (qwen2 / qwen3); `tensor_names` (e.g. `ModelFile.tensors`), when given, sets
        tie_word_embeddings (no output.weight) and qkv_bias (a blk.0.attn_q.bias)."""
        from .gguf import Value

        md = {k: (v.value if isinstance(v, Value) else v) for k, v in metadata.items()}
        arch = md.get("general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise ValueError(f"general.architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")

        def get(suffix, default=None):
            return md.get(f"{arch}.{suffix}", default)

        def need(suffix):
            v = get(suffix)
            if v is None:
                raise ValueError(f"GGUF metadata lacks {arch}.{suffix}")
            return int(v)

        kw: dict[str, Any] = {"arch": arch}
        kw["dim"] = need("embedding_length")
        kw["n_layers"] = need("block_count")
        kw["n_heads"] = need("attention.head_count")
        kw["hidden_dim"] = need("feed_forward_length")
        kw["n_kv_heads"] = int(get("attention.head_count_kv", kw["n_heads"]))
        key_length = get("attention.key_length")
        derived = kw["dim"] // kw["n_heads"]
        if key_length is not None and (int(key_length) != derived or kw["dim"] % kw["n_heads"]):
            kw["head_dim"] = int(key_length)
        head_dim = kw.get("head_dim", derived)
        value_length = get("attention.value_length")
        if value_length is not None and int(value_length) != head_dim:
            raise ValueError(f"{arch}.attention.value_length {value_length} differs from key_length {head_dim}")
        rope_dim = get("rope.dimension_count")
        if rope_dim is not None and int(rope_dim) != head_dim:
            raise ValueError(f"{arch}.rope.dimension_count {rope_dim} differs from the head size {head_dim} "
                             f"(partial rotary embeddings have no ModelArgs field)")
        if get("vocab_size") is not None:
            kw["vocab_size"] = int(get("vocab_size"))
        elif md.get("tokenizer.ggml.tokens") is not None:
            kw["vocab_size"] = len(md["tokenizer.ggml.tokens"])
        kw["max_seq_len"] = int(get("context_length", 2048))
        kw["norm_eps"] = _f32(get("attention.layer_norm_rms_epsilon", 1e-5))
        kw["rope_theta"] = _f32(get("rope.freq_base", 10000.0))
        kind = get("rope.scaling.type")
        if kind is not None and kind != "none":
            if kind not in ROPE_SCALING_TYPES:
                raise ValueError(f"{arch}.rope.scaling.type {kind!r} is not supported (none, linear, llama3)")
            rs: dict[str, Any] = {"rope_type": kind, "factor": _f32(get("rope.scaling.factor", 1.0))}
            orig = get("rope.scaling.original_context_length")
            if kind == "llama3":
                rs["low_freq_factor"] = _f32(get("rope.scaling.low_freq_factor", 1.0))
                rs["high_freq_factor"] = _f32(get("rope.scaling.high_freq_factor", 4.0))
                rs["original_max_position_embeddings"] = int(orig) if orig is not None else 8192
            elif orig is not None:
                rs["original_max_position_embeddings"] = int(orig)
            kw["rope_scaling"] = rs
        kw["qkv_bias"] = arch == "qwen2"
        kw["qk_norm"] = arch in ("qwen3", "gemma3")
        if tensor_names is not None:
            kw["tie_word_embeddings"] = "output.weight" not in tensor_names
            kw["qkv_bias"] = "blk.0.attn_q.bias" in tensor_names
        kw.update(overrides)
        return cls(**kw)


# ---- the constructor with Hugging Face aliases ------------------------------------------------

_FIELDS = tuple(f.name for f in dataclasses.fields(ModelArgs))
_dataclass_init = ModelArgs.__init__


def _init(self, *args, **kwargs):
    for alias, name in ALIASES.items():
        if alias in kwargs:
            if name in kwargs:
                raise TypeError(f"ModelArgs() got both {name!r} and its alias {alias!r}")
            kwargs[name] = kwargs.pop(alias)
    unknown = [k for k in kwargs if k not in _FIELDS]
    if unknown:
        raise TypeError(f"ModelArgs() got unexpected keyword argument(s): {', '.join(unknown)} "
                        f"(fields: {', '.join(_FIELDS)}; aliases: {', '.join(ALIASES)})")
    _dataclass_init(self, *args, **kwargs)


_init.__signature__ = inspect.signature(_dataclass_init)
_init.__doc__ = ModelArgs.__doc__
_init.__qualname__ = "ModelArgs.__init__"
ModelArgs.__init__ = _init


# ---- config file readers ---------------------------------------------------------------------

def _from_meta_params(cfg: dict) -> dict:
    """Meta params.json: keys are the fields; LLaMA 3.1+ adds use_scaled_rope (and optionally
    rope_scaling_factor), which turns on Meta's llama3 frequency scaling."""
    kw = dict(cfg)
    scaled = kw.pop("use_scaled_rope", False)
    factor = kw.pop("rope_scaling_factor", None)
    if scaled and kw.get("rope_scaling") is None:
        rs = dict(_META_LLAMA3_SCALING)
        if factor is not None:
            rs["factor"] = factor
        kw["rope_scaling"] = rs
    return kw


def _hf_rope_scaling(rs) -> dict | None:
    if rs is None:
        return None
    if not isinstance(rs, Mapping):
        raise ValueError(f"rope_scaling must be an object, got {rs!r}")
    rs = dict(rs)
    kind = rs.pop("rope_type", None)
    legacy = rs.pop("type", None)
    kind = kind if kind is not None else legacy
    rs.pop("rope_theta", None)  # transformers 5 keeps rope_theta in rope_parameters
    if kind in (None, "default", "none"):
        return None
    if kind not in ROPE_SCALING_TYPES:
        raise ValueError(f"rope_scaling type {kind!r} is not supported (linear, llama3)")
    out = {"rope_type": kind}
    for key in sorted(_ROPE_SCALING_KEYS[kind] - {"rope_type"}):
        if rs.get(key) is not None:
            out[key] = rs[key]
    return out


def _from_hf_config(cfg: dict, path: str) -> dict:
    model_type = cfg.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"{path}: model_type {model_type!r} is not supported "
                         f"(supported: {', '.join(HF_MODEL_TYPES)})")
    arch = HF_MODEL_TYPES[model_type]
    kw: dict[str, Any] = {"arch": arch}
    for hf, name in (("hidden_size", "dim"), ("num_hidden_layers", "n_layers"), ("num_attention_heads", "n_heads"),
                     ("num_key_value_heads", "n_kv_heads"), ("intermediate_size", "hidden_dim"),
                     ("rms_norm_eps", "norm_eps"), ("max_position_embeddings", "max_seq_len"),
                     ("vocab_size", "vocab_size"), ("head_dim", "head_dim")):
        if cfg.get(hf) is not None:
            kw[name] = cfg[hf]
    params = cfg.get("rope_parameters")  # transformers 5
    rope_theta = cfg.get("rope_theta")
    if rope_theta is None and isinstance(params, Mapping):
        rope_theta = params.get("rope_theta")
    kw["rope_theta"] = float(rope_theta) if rope_theta is not None else 10000.0  # the HF default
    rs = cfg.get("rope_scaling")
    kw["rope_scaling"] = _hf_rope_scaling(rs if rs is not None else params)
    kw["tie_word_embeddings"] = bool(cfg.get("tie_word_embeddings", False))
    kw["qkv_bias"] = True if arch == "qwen2" else bool(cfg.get("attention_bias", False))
    kw["qk_norm"] = arch == "qwen3"
    return kw
