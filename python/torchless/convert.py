"""Convert and quantize models, streaming, with llama.cpp's quantization mixes.

    torchless.convert("model-f16.gguf", "model-q4_k_m.gguf", "q4_k_m")     # any source torchless.load opens
    torchless.quantize_model("model-f16.gguf", "model-q8_0.gguf", "q8_0")  # llama-quantize's name for it
    torchless.convert("model.gguf", "model.tl", "q8_0")                    # the native format

    torchless quantize IN.gguf OUT.gguf TYPE
    torchless convert SRC OUT [--type TYPE] [--format gguf|tl]

TYPE (llama.cpp's `llama-quantize` names, case-insensitive): f32 f16 bf16 q8_0 q4_0 q4_1 q5_0
q5_1 q4_k_s q4_k_m q5_k_s q5_k_m q6_k (q4_k, q5_k: aliases of the _m mixes).

Which tensor gets which type follows llama.cpp `src/llama-quant.cpp` (`tensor_allows_quantization`,
`llama_tensor_get_type_impl`, `tensor_type_fallback`): see `plan_tensors`. A tensor whose source
type is the target type is copied byte for byte; one already quantized to another type is
dequantized to F32 and quantized again (llama-quantize --allow-requantize), with a warning.

Nothing is loaded whole: every tensor is read (pread, so the source pages do not stay in this
process's RSS), converted and written in row chunks of about `_CHUNK_ELEMENTS`, the chunks of a
tensor quantized on `n_threads` threads (the C kernels release the GIL). The output goes to a
temporary file beside OUT that is renamed at the end, so an error leaves no partial file.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _C
from . import gguf as _gguf
from ._progress import Progress

__all__ = ["convert", "quantize_model", "plan_tensors", "describe_fallbacks", "Mix", "MIXES", "TYPES",
           "TensorPlan", "ConvertReport"]


# --------------------------------------------------------------------------- the mixes


@dataclass(frozen=True)
class Mix:
    """A quantization mix: llama.cpp's `llama_ftype` number and its default tensor type
    (`llama_ftype_get_default_type`)."""

    name: str
    file_type: int
    base: str


MIXES: dict[str, Mix] = {m.name: m for m in [
    Mix("f32", 0, "f32"), Mix("f16", 1, "f16"), Mix("bf16", 32, "bf16"),
    Mix("q8_0", 7, "q8_0"), Mix("q4_0", 2, "q4_0"), Mix("q4_1", 3, "q4_1"),
    Mix("q5_0", 8, "q5_0"), Mix("q5_1", 9, "q5_1"),
    Mix("q4_k_s", 14, "q4_k"), Mix("q4_k_m", 15, "q4_k"),
    Mix("q5_k_s", 16, "q5_k"), Mix("q5_k_m", 17, "q5_k"), Mix("q6_k", 18, "q6_k"),
]}
TYPES = list(MIXES)
_ALIASES = {"q4_k": "q4_k_m", "q5_k": "q5_k_m"}  # llama-quantize's aliases
_BY_FILE_TYPE = {m.file_type: m for m in MIXES.values()}

# tensor_type_fallback: a type whose blocks do not fit the row -> the one llama.cpp uses instead
# (block size 32), and F16 when even that does not fit. llama.cpp has no fallback for the
# 32-blocks themselves (it stops); we keep such rows in F16 too, and say so.
_FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0", "q2_k": "q4_0", "q3_k": "q4_0"}

# GGUF architectures whose q/k rows are in llama.cpp rope type NORM order (adjacent pairs):
# a table marked `torchless.rope.neox` (HF LLaMA/Mistral q_proj/k_proj) must be permuted for them.
_NORM_ROPE_ARCHS = {"llama"}


def resolve_type(type: str) -> Mix:
    """The Mix named `type` (case-insensitive, llama-quantize aliases allowed)."""
    key = str(type).lower()
    key = _ALIASES.get(key, key)
    mix = MIXES.get(key)
    if mix is None:
        raise ValueError(f"unknown type {type!r}; one of {', '.join(TYPES)}")
    return mix


def _block(dtype: str) -> int:
    return int(_C.dtype_info(dtype)["block_size"])


def _quantized(dtype: str) -> bool:
    return bool(_C.dtype_info(dtype)["quantized"])


def _row_bytes(dtype: str, n: int) -> int:
    info = _C.dtype_info(dtype)
    return n // int(info["block_size"]) * int(info["type_size"])


def _n_dims(shape: Sequence[int]) -> int:
    """ggml_n_dims: dimensions up to the last one (GGML order) that is not 1."""
    ne = list(reversed(shape))
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:
        n -= 1
    return max(n, 1)


def _allows_quantization(name: str, shape: Sequence[int]) -> bool:
    """llama-quant.cpp tensor_allows_quantization, for the tensors of the architectures we read:
    2-D and up, named *weight, not a norm, not an expert router, not a positional embedding."""
    return (_n_dims(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and "ffn_gate_inp.weight" not in name
            and name not in ("position_embd.weight", "token_types.weight"))


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp use_more_bits: the first and last eighth of the layers, and every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


_LAYER = re.compile(r"blk\.(\d+)\.")


def _layer(name: str) -> int:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


@dataclass
class TensorPlan:
    """What happens to one tensor: source and target dtype, the fallback llama.cpp's rules took
    ((wanted, used) when the row did not fit the wanted type's blocks), and whether its rows
    are permuted (q/k from rotate-half to adjacent-pair order)."""

    name: str
    shape: tuple[int, ...]  # NumPy order: shape[-1] = ne[0], the row
    src: str
    dst: str
    fallback: tuple[str, str] | None = None
    permute_heads: int = 0  # >0: permute rows for RoPE NORM, this many heads

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        rows = self.n_elements // self.shape[-1] if self.shape else 1
        return rows * _row_bytes(self.dst, self.shape[-1] if self.shape else 1)


def _int_key(metadata: Mapping[str, Any], key: str, layer: int = 0) -> int | None:
    v = metadata.get(key)
    if v is None:
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return int(v[layer]) if len(v) > layer else None
    return int(v)


def plan_tensors(tensors: Iterable[tuple[str, str, Sequence[int]]], metadata: Mapping[str, Any],
                 type: str | Mix) -> list[TensorPlan]:
    """The target type of every tensor of a model for the mix `type`, by llama.cpp's rules.

    `tensors`: (name, source dtype, shape in NumPy order), in file order. Rules (llama-quant.cpp):
    - not quantizable (1-D: norms, biases, rope factors; *_norm.weight; routers): keep the source
      type (F16/BF16 vectors become F32, as convert_hf_to_gguf.py writes them);
    - F32/F16/BF16 mixes: every other tensor in that type;
    - `output.weight`, and `token_embd.weight` when there is no output.weight (tied): Q8_0 when
      the row does not fit the mix's blocks, else Q6_K unless the mix is Q8_0;
    - q4_k_m/q5_k_m: `attn_v` (and `attn_qkv`) of the use_more_bits layers (counted over those
      tensors) and `ffn_down` of the use_more_bits layers (of `block_count`) in Q6_K;
      q4_k_s: the first 4 attn_v and the first eighth of the ffn_down in Q5_K;
      LLaMA-70B shapes (80 layers, GQA): attn_v Q4_K -> Q5_K;
    - then the fallback for rows that are not a whole number of blocks: Q4_K -> Q5_0,
      Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 when the row is not a multiple of 32 either.
    """
    mix = type if isinstance(type, Mix) else resolve_type(type)
    items = [(n, d, tuple(int(x) for x in s)) for n, d, s in tensors]
    names = {n for n, _, _ in items}
    arch = metadata.get("general.architecture") or ""
    n_layers = _int_key(metadata, f"{arch}.block_count")
    if n_layers is None:
        n_layers = max((_layer(n) for n in names), default=-1) + 1
    attn_v_like = [n for n, _, _ in items if any(k in n for k in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"))]
    attn_v_index = {n: i for i, n in enumerate(sorted(attn_v_like, key=lambda n: (_layer(n), n)))}
    n_attn_v = len(attn_v_like)
    tied = "output.weight" not in names
    n_head = _int_key(metadata, f"{arch}.attention.head_count") or 0
    n_head_kv = _int_key(metadata, f"{arch}.attention.head_count_kv") or n_head
    is_70b = arch == "llama" and n_layers == 80 and n_head != n_head_kv
    base = mix.base
    base_quantized = _quantized(base)

    plans = []
    for name, src, shape in items:
        ncols = shape[-1] if shape else 1
        fallback = None
        if not _allows_quantization(name, shape):
            dst = "f32" if src in ("f16", "bf16", "f64") and _n_dims(shape) == 1 else src
        elif not base_quantized:
            dst = base
        else:
            dst = base
            if name == "output.weight" or (tied and name == "token_embd.weight"):
                if ncols % _block(base):
                    dst = "q8_0"
                elif base != "q8_0":
                    dst = "q6_k"
            elif name == "token_embd.weight":
                pass
            elif name in attn_v_index:
                i = attn_v_index[name]
                if mix.name in ("q4_k_m", "q5_k_m") and _use_more_bits(i, n_attn_v):
                    dst = "q6_k"
                elif mix.name == "q4_k_s" and i < 4:
                    dst = "q5_k"
                if is_70b and dst == "q4_k":
                    dst = "q5_k"
            elif "ffn_down" in name:
                i = _layer(name)
                if mix.name in ("q4_k_m", "q5_k_m") and _use_more_bits(i, n_layers):
                    dst = "q6_k"
                elif mix.name == "q4_k_s" and i < n_layers // 8:
                    dst = "q5_k"
            if ncols % _block(dst):
                wanted = dst
                dst = _FALLBACK.get(dst, "f16")
                if ncols % _block(dst):
                    dst = "f16"
                fallback = (wanted, dst)
        heads = 0
        if metadata.get("torchless.rope.neox") and arch in _NORM_ROPE_ARCHS:
            if re.fullmatch(r"blk\.\d+\.attn_q\.(weight|bias)", name):
                heads = _int_key(metadata, f"{arch}.attention.head_count", max(_layer(name), 0)) or 0
            elif re.fullmatch(r"blk\.\d+\.attn_k\.(weight|bias)", name):
                layer = max(_layer(name), 0)
                heads = (_int_key(metadata, f"{arch}.attention.head_count_kv", layer)
                         or _int_key(metadata, f"{arch}.attention.head_count", layer) or 0)
        plans.append(TensorPlan(name, shape, src, dst, fallback, heads))
    return plans


def _summarize_fallbacks(plans: Iterable[TensorPlan]) -> list[dict[str, Any]]:
    """[{"from": "q4_k", "to": "q5_0", "tensors": 30, "row_sizes": [576]}], most tensors first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for p in plans:
        if p.fallback:
            g = groups.setdefault(p.fallback, {"from": p.fallback[0], "to": p.fallback[1], "tensors": 0, "row_sizes": set()})
            g["tensors"] += 1
            g["row_sizes"].add(p.shape[-1])
    out = sorted(groups.values(), key=lambda g: (-g["tensors"], g["from"]))
    for g in out:
        g["row_sizes"] = sorted(g["row_sizes"])
    return out


def format_fallbacks(fallbacks: Sequence[Mapping[str, Any]]) -> str:
    """'30 tensors Q4_K→Q5_0 (rows of 576 not a multiple of 256); 1 tensor Q6_K→Q8_0 (...)'."""
    parts = []
    for g in fallbacks:
        rows = ", ".join(str(r) for r in g["row_sizes"])
        n = g["tensors"]
        parts.append(f"{n} tensor{'s' if n != 1 else ''} {g['from'].upper()}→{g['to'].upper()} "
                     f"(rows of {rows} not a multiple of {_block(g['from'])})")
    return "; ".join(parts)


def describe_fallbacks(model) -> list[dict[str, Any]] | None:
    """The fallbacks a quantized model file went through, derived from its tensor types and
    `general.file_type` (so llama.cpp's files are described too): the tensors whose type is the
    fallback llama.cpp's rules give for its mix. None when the file type is not a mix we know."""
    ft = model.metadata.get("general.file_type")
    mix = _BY_FILE_TYPE.get(int(ft)) if isinstance(ft, (int, np.integer)) else None
    if mix is None or not _quantized(mix.base):
        return None
    tensors = model.tensors
    items = [(n, tensors[n].dtype, tensors[n].shape) for n in tensors]
    plans = plan_tensors(items, model.metadata, mix)
    return _summarize_fallbacks(p for p in plans if p.fallback and tensors[p.name].dtype == p.dst)


# --------------------------------------------------------------------------- writing


def _write_streaming(path: str, kvs: Sequence[tuple[str, str, Any]], infos: Sequence[tuple[str, str, tuple]],
                     fill: Callable[[int], Iterable[Any]], *, format: str = "gguf", alignment: int = 32) -> None:
    """Write a model file tensor by tensor through the C streaming writer (`gguf.write_model`).

    kvs: (key, GGUF value type name as ModelFile.metadata_types gives it, value); infos: (name,
    dtype, shape in NumPy order); fill(i) yields the bytes of tensor i (buffers, in order,
    exactly its size), gathered here into one buffer: one output tensor is held at a time."""
    metadata = {k: v for k, _, v in kvs}
    types = {k: t for k, t, _ in kvs}
    if alignment != 32 and "general.alignment" not in metadata:
        metadata["general.alignment"] = alignment
        types["general.alignment"] = "uint32"
    sizes = []
    for name, dtype, shape in infos:
        ne = tuple(reversed(shape)) or (1,)
        sizes.append(math.prod(ne[1:]) * _row_bytes(dtype, ne[0]))

    def whole(i: int) -> bytearray:
        buf = bytearray(sizes[i])
        at = 0
        for chunk in fill(i):
            b = memoryview(chunk).cast("B")
            if at + len(b) > sizes[i]:
                raise RuntimeError(f"tensor '{infos[i][0]}': more than the expected {sizes[i]} bytes")
            buf[at:at + len(b)] = b
            at += len(b)
        if at != sizes[i]:
            raise RuntimeError(f"tensor '{infos[i][0]}': {at} bytes written, expected {sizes[i]}")
        return buf

    _gguf.write_model(path, metadata, infos, whole, types=types, format=format)


# --------------------------------------------------------------------------- reading and converting


_CHUNK_ELEMENTS = 1 << 22  # rows per chunk: about 16 MiB of float32


class _Source:
    """Raw row bytes of the source's tensors: pread from the file when the view says where its
    data lies (the pages then stay out of this process's RSS), else from the view's buffer."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def rows(self, view, row_bytes: int, r0: int, r1: int) -> np.ndarray:
        path, offset = view.path, view.offset
        n = (r1 - r0) * row_bytes
        if path is not None and offset is not None:
            fd = self._fds.get(path)
            if fd is None:
                fd = self._fds[path] = os.open(path, os.O_RDONLY)
            buf = np.empty(n, np.uint8)
            got = os.preadv(fd, [buf], offset + r0 * row_bytes)
            if got != n:
                raise OSError(f"{path}: short read of tensor '{view.name}' ({got} of {n} bytes)")
            return buf
        flat = np.asarray(view).reshape(-1).view(np.uint8)
        return flat[r0 * row_bytes:r1 * row_bytes]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _to_f32(raw: np.ndarray, dtype: str, shape: tuple[int, int]) -> np.ndarray:
    if dtype == "f32":
        return raw.view(np.float32).reshape(shape)
    return _C.dequantize(raw, dtype, shape, None)


def _from_f32(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "f32":
        return np.ascontiguousarray(x, np.float32).reshape(-1).view(np.uint8)
    return _C.quantize(x, dtype).reshape(-1)


def _permutation(rows: int, n_heads: int) -> np.ndarray:
    """Row gather of llama.cpp's LlamaModel.permute (convert_hf_to_gguf.py): within each head,
    rows [first half | second half] (rotate-half order) become interleaved pairs (NORM order)."""
    if n_heads <= 0 or rows % (2 * n_heads):
        raise ValueError(f"cannot permute {rows} rows for {n_heads} heads")
    return np.arange(rows).reshape(n_heads, 2, rows // n_heads // 2).swapaxes(1, 2).reshape(-1)


def _tensor_chunks(plan: TensorPlan, view, source: _Source, pool: ThreadPoolExecutor | None,
                   n_inflight: int) -> Iterator[np.ndarray]:
    """The converted bytes of one tensor, chunk by chunk (chunks computed on the pool, yielded in order)."""
    ncols = plan.shape[-1] if plan.shape else 1
    nrows = plan.n_elements // ncols
    src_row = _row_bytes(plan.src, ncols)
    if plan.permute_heads:
        # a q/k projection: one chunk, rows gathered before conversion (a row is whole blocks)
        perm = _permutation(plan.shape[0], plan.permute_heads)
        raw = source.rows(view, src_row, 0, nrows)
        raw = np.ascontiguousarray(raw.reshape(plan.shape[0], -1)[perm]).reshape(-1)  # bias: per element
        if plan.src == plan.dst:
            yield raw
        else:
            yield _from_f32(_to_f32(raw, plan.src, (nrows, ncols)), plan.dst)
        return

    step = max(1, _CHUNK_ELEMENTS // ncols)

    def job(r0: int, r1: int) -> np.ndarray:
        raw = source.rows(view, src_row, r0, r1)
        if plan.src == plan.dst:
            return raw
        return _from_f32(_to_f32(raw, plan.src, (r1 - r0, ncols)), plan.dst)

    bounds = [(r, min(r + step, nrows)) for r in range(0, nrows, step)]
    if pool is None or len(bounds) == 1:
        for r0, r1 in bounds:
            yield job(r0, r1)
        return
    pending: deque = deque()
    for r0, r1 in bounds:
        pending.append(pool.submit(job, r0, r1))
        if len(pending) >= n_inflight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _progress(enabled: bool, total: int) -> Progress:
    return Progress(enabled, total,
                    lambda done, n, name: f"{done}/{n} tensors ({100 * done // n if n else 100}%) {name}",
                    prefix="torchless convert", clear=True, unit="tensor", desc="torchless convert")


@dataclass
class ConvertReport:
    """What `convert` did: counts, sizes, bits per weight, time, fallbacks, requantized tensors."""

    src: str
    dst: str
    type: str
    file_type: int
    n_tensors: int
    n_elements: int
    bytes_in: int
    bytes_out: int
    seconds: float
    dtypes: dict[str, int] = field(default_factory=dict)  # output dtype -> tensor count
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    requantized: dict[str, int] = field(default_factory=dict)  # source dtype -> tensors dequantized first
    permuted: int = 0

    @property
    def bpw_in(self) -> float:
        return 8 * self.bytes_in / self.n_elements if self.n_elements else float("nan")

    @property
    def bpw_out(self) -> float:
        return 8 * self.bytes_out / self.n_elements if self.n_elements else float("nan")

    def summary(self) -> str:
        mib = 1 << 20
        lines = [f"{self.dst}: {self.n_tensors} tensors, {self.bytes_in / mib:.1f} MiB ({self.bpw_in:.2f} bpw) -> "
                 f"{self.bytes_out / mib:.1f} MiB {self.type.upper()} ({self.bpw_out:.2f} bpw) in {self.seconds:.1f} s"]
        if self.fallbacks:
            lines.append(f"fallbacks: {format_fallbacks(self.fallbacks)}")
        if self.requantized:
            n = sum(self.requantized.values())
            lines.append(f"requantized: {n} tensors from {', '.join(sorted(d.upper() for d in self.requantized))} "
                         "(dequantized to F32 first)")
        if self.permuted:
            lines.append(f"permuted: {self.permuted} q/k tensors from rotate-half to RoPE NORM order")
        return "\n".join(lines)


def _output_metadata(src_md: Mapping[str, Any], src_types: Mapping[str, str], mix: Mix,
                     format: str) -> list[tuple[str, str, Any]]:
    """The source's keys (tokenizer and all) with llama-quantize's changes: general.file_type,
    general.quantization_version = 2, no split.* keys. For GGUF the torchless.* extension keys
    are dropped after their meaning is applied (torchless.rope.neox: q/k permuted), except
    torchless.eog_token_ids: it has no GGUF equivalent, and llama.cpp ignores keys it does not know."""
    kvs = []
    for key, value in src_md.items():
        if key in ("general.file_type", "general.quantization_version") or key.startswith("split."):
            continue
        if format == "gguf" and key.startswith("torchless.") and key != "torchless.eog_token_ids":
            continue
        kvs.append((key, src_types.get(key) or _gguf._infer(value), value))
    kvs.append(("general.quantization_version", "uint32", 2))
    kvs.append(("general.file_type", "uint32", mix.file_type))
    return kvs


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def convert(src: str | os.PathLike, dst: str | os.PathLike, type: str = "q8_0", *, format: str | None = None,
            progress: bool = True, n_threads: int | None = None) -> ConvertReport:
    """Write the model `src` (anything `torchless.load` opens: a GGUF file, a catalog name, ...)
    to `dst` with the quantization mix `type` (see TYPES), streaming tensor by tensor.

    `format`: "gguf" or "tl" (default: "tl" when dst ends in .tl, else "gguf"). `progress`:
    a progress bar and the summary on stderr. Returns a ConvertReport; warns (UserWarning)
    when tensors that are already quantized are quantized again."""
    report = _convert(src, dst, type, format=format, progress=progress, n_threads=n_threads)
    if progress:
        print(report.summary(), file=sys.stderr)
    return report


def _convert(src: str | os.PathLike, dst: str | os.PathLike, type: str, *, format: str | None,
             progress: bool, n_threads: int | None) -> ConvertReport:
    """convert without printing the summary (the CLI prints it on stdout)."""
    from .files import load

    mix = resolve_type(type)
    dst = os.fspath(dst)
    fmt = (format or ("tl" if dst.endswith(".tl") else "gguf")).lower()
    if fmt not in ("gguf", "tl"):
        raise ValueError(f"unknown format {format!r}; gguf or tl")
    if os.path.isdir(dst):
        raise IsADirectoryError(21, "the output is a directory", dst)
    directory = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(directory):
        raise FileNotFoundError(2, "no such directory for the output", directory)
    if n_threads is not None and n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    n_threads = n_threads or _default_threads()
    t0 = time.perf_counter()
    model = load(src)
    try:
        src_path = os.path.realpath(model.path)
        if os.path.realpath(dst) == src_path or (os.path.exists(dst) and os.path.samefile(dst, src_path)):
            raise ValueError(f"{dst}: the output would overwrite the source; choose another path")
        md = model.metadata
        if not isinstance(md.get("general.architecture"), str):
            raise ValueError(f"{model.path}: no general.architecture in its metadata: not a model table "
                             "torchless can convert")
        tensors = model.tensors
        views = [tensors[n] for n in tensors]
        plans = plan_tensors([(v.name, v.dtype, v.shape) for v in views], md, mix)
        if fmt != "gguf":
            for p in plans:
                p.permute_heads = 0  # the native format keeps torchless.rope.neox as it is
        requantized = Counter(p.src for p in plans if p.src != p.dst and _quantized(p.src))
        if requantized:
            warnings.warn(f"{model.path}: requantizing {sum(requantized.values())} tensors already in "
                          f"{', '.join(sorted(d.upper() for d in requantized))}: they are dequantized to F32 "
                          "first, so the result is no better than the source", stacklevel=3)
        kvs = _output_metadata(md, model.metadata_types, mix, fmt)
        alignment = int(md.get("general.alignment") or 32)
        infos = [(p.name, p.dst, p.shape) for p in plans]

        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dst)}.", suffix=".partial", dir=directory)
        os.close(fd)
        source = _Source()
        bar = _progress(progress, len(plans))
        pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None

        def fill(i: int) -> Iterator[np.ndarray]:
            yield from _tensor_chunks(plans[i], views[i], source, pool, n_threads + 1)
            bar.advance(1, plans[i].name)

        try:
            _write_streaming(tmp, kvs, infos, fill, format=fmt, alignment=alignment)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, dst)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            source.close()
    finally:
        model.close()

    report = ConvertReport(
        src=str(model.path), dst=dst, type=mix.name, file_type=mix.file_type, n_tensors=len(plans),
        n_elements=sum(p.n_elements for p in plans), bytes_in=sum(int(v.nbytes) for v in views),
        bytes_out=sum(p.nbytes for p in plans), seconds=time.perf_counter() - t0,
        dtypes=dict(Counter(p.dst for p in plans)), fallbacks=_summarize_fallbacks(plans),
        requantized=dict(requantized), permuted=sum(1 for p in plans if p.permute_heads))
    return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def quantize_model(src: str | os.PathLike, dst: str | os.PathLike, type: str = "q8_0", *,
                   progress: bool = True, n_threads: int | None = None) -> ConvertReport:
    """llama.cpp's `llama_model_quantize` / `llama-quantize IN OUT TYPE`: `convert` to GGUF."""
    return convert(src, dst, type, format="gguf", progress=progress, n_threads=n_threads)
