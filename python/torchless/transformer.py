"""`Transformer`: the Meta reference `llama/model.py` face of the engine.

    model = Transformer(ModelArgs(dim=512, n_layers=4, n_heads=8, n_kv_heads=2, vocab_size=32000))
    logits = model.forward([[1, 415, 5565]], start_pos=0)          # float32 (bsz, seqlen, vocab)
    model.load_state_dict(state_dict, strict=True)                 # reference or GGUF names
    view = model.state_dict()["layers.0.attention.wq.weight"]      # zero-copy TensorView

Weights live in a GGUF mapping: a model built from arrays (random init, load_state_dict) is
written once to an unlinked temporary file with torchless.gguf.write and mapped, so
state_dict() views are zero-copy either way.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Mapping, NamedTuple

import numpy as np

from . import _C, gguf
from .model import Model

# Meta reference names <-> GGUF (llama.cpp) names; both spell the same adjacent-pair RoPE layout.
_LAYER = {
    "attention.wq.weight": "attn_q.weight",
    "attention.wk.weight": "attn_k.weight",
    "attention.wv.weight": "attn_v.weight",
    "attention.wo.weight": "attn_output.weight",
    "feed_forward.w1.weight": "ffn_gate.weight",
    "feed_forward.w2.weight": "ffn_down.weight",
    "feed_forward.w3.weight": "ffn_up.weight",
    "attention_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
}
_GLOBAL = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
           "output.weight": "output.weight"}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_GLOBAL_BACK = {v: k for k, v in _GLOBAL.items()}


def to_gguf_name(name: str) -> str:
    """The GGUF tensor name for a reference (or GGUF) name; unknown names come back unchanged."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in _LAYER:
        return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}"
    return name


def to_reference_name(name: str) -> str:
    """The reference name for a GGUF tensor name (GGUF-only tensors keep theirs)."""
    if name in _GLOBAL_BACK:
        return _GLOBAL_BACK[name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if m and m.group(2) in _LAYER_BACK:
        return f"layers.{m.group(1)}.{_LAYER_BACK[m.group(2)]}"
    return name


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


def _tokens_array(tokens) -> np.ndarray:
    """(bsz, seqlen) int64 from lists of lists, NumPy arrays, __array__ or __dlpack__ objects."""
    if hasattr(tokens, "__dlpack__") and not isinstance(tokens, np.ndarray):
        try:
            tokens = np.from_dlpack(tokens)
        except (TypeError, BufferError, RuntimeError):
            tokens = np.asarray(tokens)
    arr = np.asarray(tokens)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"tokens must be integers, got an array of {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0 or arr.shape[0] == 0:
        raise ValueError(f"tokens must have shape (bsz, seqlen) with both > 0, got {arr.shape}")
    return arr.astype(np.int64, copy=False)


class Transformer:
    """The reference `Transformer`: `forward(tokens, start_pos)` -> float32 (bsz, seqlen, vocab_size).

    `Transformer(args, seed=0)` makes seeded random float32 weights (like the reference's
    initialisation: uniform with bound 1/sqrt(fan_in), norms at 1); `from_pretrained` loads
    a file or catalog name."""

    def __init__(self, args=None, *, seed: int = 0, n_threads: int | None = None, kv_dtype: str = "f16",
                 device: str = "auto"):
        from .args import ModelArgs

        self.params = args if args is not None else ModelArgs()
        self.params.validate(require_vocab=True)
        self._n_threads, self._kv_dtype, self._device = n_threads, kv_dtype, device
        self._load_arrays(self._random_weights(seed), gguf_metadata=self.params.to_gguf_metadata())

    # ---- construction

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, *, max_seq_len: int | None = None,
                        max_batch_size: int | None = None, n_threads: int | None = None,
                        kv_dtype: str = "f16", tokenizer_path: str | os.PathLike | None = None,
                        device: str = "auto") -> Transformer:
        """A Transformer over a model file (GGUF, .tl, llama2.c checkpoint) or catalog name
        (weights mapped, used in place); `params` come from the file's metadata.
        `tokenizer_path`: a tokenizer file used instead of the model file's own (needed for
        text with a llama2.c checkpoint, which has no vocabulary). `device`: "auto", "cpu",
        "cuda[:N]", ... (see torchless.backends())."""
        from .args import ModelArgs

        self = cls.__new__(cls)
        self._n_threads, self._kv_dtype, self._device = n_threads, kv_dtype, device
        self._model = Model(path_or_name, max_seq_len=max_seq_len or 0, max_batch_size=max_batch_size or 1,
                            n_threads=n_threads, kv_dtype=kv_dtype, tokenizer_path=tokenizer_path, device=device)
        self.params = ModelArgs.from_gguf_metadata(self._model.file_metadata(False), self._model.tensor_names())
        self.params.max_seq_len = self._model.max_seq_len
        self.params.max_batch_size = self._model.max_batch_size
        return self

    def _random_weights(self, seed: int) -> dict[str, np.ndarray]:
        a = self.params
        head_dim, n_kv, hidden = a.resolved_head_dim, a.resolved_n_kv_heads, a.resolved_hidden_dim
        rng = np.random.default_rng(seed)
        q_dim, kv_dim = a.n_heads * head_dim, n_kv * head_dim

        def linear(out_f, in_f):
            bound = 1.0 / np.sqrt(in_f)
            return rng.uniform(-bound, bound, size=(out_f, in_f)).astype(np.float32)

        w = {"token_embd.weight": rng.standard_normal((a.vocab_size, a.dim)).astype(np.float32)}
        for l in range(a.n_layers):
            p = f"blk.{l}."
            w[p + "attn_norm.weight"] = np.ones(a.dim, np.float32)
            w[p + "attn_q.weight"] = linear(q_dim, a.dim)
            w[p + "attn_k.weight"] = linear(kv_dim, a.dim)
            w[p + "attn_v.weight"] = linear(kv_dim, a.dim)
            w[p + "attn_output.weight"] = linear(a.dim, q_dim)
            w[p + "ffn_norm.weight"] = np.ones(a.dim, np.float32)
            w[p + "ffn_gate.weight"] = linear(hidden, a.dim)
            w[p + "ffn_up.weight"] = linear(hidden, a.dim)
            w[p + "ffn_down.weight"] = linear(a.dim, hidden)
        w["output_norm.weight"] = np.ones(a.dim, np.float32)
        if not a.tie_word_embeddings:
            w["output.weight"] = linear(a.vocab_size, a.dim)
        return w

    def _load_arrays(self, tensors: Mapping[str, Any], gguf_metadata: Mapping[str, Any],
                     types: Mapping[str, str] | None = None) -> None:
        """Write the weights to an unlinked temporary GGUF and map it."""
        fd, path = tempfile.mkstemp(prefix="torchless-", suffix=".gguf")
        os.close(fd)
        try:
            gguf.write(path, gguf_metadata, tensors, types=types)
            a = self.params
            self._model = Model(path, max_seq_len=a.max_seq_len, max_batch_size=a.max_batch_size,
                                n_threads=self._n_threads, kv_dtype=self._kv_dtype,
                                device=self._device)
        finally:
            os.unlink(path)  # the mapping keeps the data; nothing is left on disk

    # ---- weights

    def state_dict(self) -> dict[str, _C.TensorView]:
        """Reference name -> zero-copy, read-only TensorView of the mapped weights."""
        return {to_reference_name(n): v for n, v in self._current_views().items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Replace weights by name (reference or GGUF names). Values: NumPy arrays, TensorViews
        (quantized ones keep their blocks) or anything with __array__. Shapes must match; with
        strict, every weight must be given and no other. Raises RuntimeError like PyTorch."""
        current = self._current_views()
        given = {}
        unexpected = []
        for name, value in state_dict.items():
            g = to_gguf_name(name)
            if g not in current:
                unexpected.append(name)
            else:
                given[g] = (name, value)
        missing = [to_reference_name(n) for n in current if n not in given]
        errors = []
        if strict and (missing or unexpected):
            if missing:
                errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        tensors: dict[str, Any] = {}
        for g, view in current.items():
            if g not in given:
                tensors[g] = view
                continue
            name, value = given[g]
            if isinstance(value, _C.TensorView):
                if value.shape != view.shape:
                    errors.append(f"size mismatch for {name}: copying a param with shape {value.shape}, "
                                  f"the shape in current model is {view.shape}.")
                tensors[g] = value
                continue
            arr = np.asarray(value)
            if arr.shape != view.shape:
                errors.append(f"size mismatch for {name}: copying a param with shape {tuple(arr.shape)}, "
                              f"the shape in current model is {view.shape}.")
                continue
            if not np.issubdtype(arr.dtype, np.floating):
                errors.append(f"{name}: expected floating-point values, got {arr.dtype}")
                continue
            tensors[g] = np.ascontiguousarray(arr, dtype=np.float16 if arr.dtype == np.float16 else np.float32)
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for Transformer:\n\t" + "\n\t".join(errors))
        md, types = self._metadata()
        self._load_arrays(tensors, md, types)
        return IncompatibleKeys(missing if not strict else [], unexpected if not strict else [])

    def _current_views(self) -> dict[str, _C.TensorView]:
        return {n: self._model.tensor(n) for n in self._model.tensor_names()}

    def _metadata(self):
        return self._model.file_metadata(False), self._model.file_metadata(True)

    # ---- running

    def forward(self, tokens, start_pos: int = 0) -> np.ndarray:
        """Logits float32 (bsz, seqlen, vocab_size) for tokens (bsz, seqlen) at positions
        start_pos.. of sequences 0..bsz-1 (each row continues its own KV cache)."""
        if (type(tokens) is list and len(tokens) == 1 and type(tokens[0]) is list and tokens[0]
                and type(start_pos) is int and start_pos >= 0 and all(type(t) is int for t in tokens[0])):
            # the common decode step, [[token]]: straight to the engine (it checks ids and positions)
            if start_pos + len(tokens[0]) > self._model.max_seq_len:
                raise ValueError(f"start_pos {start_pos} + seqlen {len(tokens[0])} exceeds max_seq_len "
                                 f"{self._model.max_seq_len}")
            return _C.Model.forward(self._model, tokens[0], start_pos, 0)[None]
        arr = _tokens_array(tokens)
        bsz, seqlen = arr.shape
        if bsz > self._model.max_batch_size:
            raise ValueError(f"batch of {bsz} exceeds max_batch_size {self._model.max_batch_size}")
        if not isinstance(start_pos, (int, np.integer)) or start_pos < 0:
            raise ValueError(f"start_pos must be a non-negative int, got {start_pos!r}")
        if start_pos + seqlen > self._model.max_seq_len:
            raise ValueError(f"start_pos {start_pos} + seqlen {seqlen} exceeds max_seq_len {self._model.max_seq_len}")
        positions = np.tile(np.arange(start_pos, start_pos + seqlen), bsz)
        seqs = np.repeat(np.arange(bsz), seqlen)
        out = self._model.forward_batch(arr.reshape(-1), positions, seqs)
        return out.reshape(bsz, seqlen, -1)  # a view: the logits were written once

    __call__ = forward

    def eval(self) -> Transformer:
        """Returns self (there is no training mode), as in PyTorch code ported to torchless."""
        return self

    @property
    def model(self) -> Model:
        """The engine object underneath (generation, tokenizer)."""
        return self._model

    def __repr__(self) -> str:
        c = self._model.config
        return f"Transformer({c['arch']}, dim={c['dim']}, n_layers={c['n_layers']}, vocab_size={c['n_vocab']})"


def create_transformer_from_config(path: str | os.PathLike, max_seq_len: int = 2048, seed: int = 0) -> Transformer:
    """A randomly initialised Transformer from a Meta params.json or HF config.json."""
    from .args import ModelArgs

    args = ModelArgs.from_config_file(path)
    args.max_seq_len = max_seq_len
    return Transformer(args, seed=seed)
