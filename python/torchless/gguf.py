"""Write GGUF files (v3 by default) and torchless .tl files from ordinary Python values.

    torchless.gguf.write("out.gguf",
                         {"general.architecture": "llama", "llama.block_count": Value(30, "uint32")},
                         {"token_embd.weight": np.zeros((49152, 576), np.float16),
                          "blk.0.attn_q.weight": ("q4_k", raw_blocks, (576, 576))})

Value types are inferred the way the `gguf` package's writer infers them (bool -> bool,
int -> int32 (int64 when it does not fit), float -> float32, str -> string, list -> array,
NumPy scalars and arrays -> their own type) unless given as `Value(x, "uint32")` or through
the `types` mapping (as `ModelFile.metadata_types` reports them, so a file can be copied).

`write_model` writes the same files tensor by tensor (a converter holds one tensor at a time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _C

VALUE_TYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array",
               "uint64", "int64", "float64"]
_TYPE_ID = {name: i for i, name in enumerate(VALUE_TYPES)}
_NUMPY = {"uint8": "<u1", "int8": "<i1", "uint16": "<u2", "int16": "<i2", "uint32": "<u4", "int32": "<i4",
          "float32": "<f4", "bool": "|b1", "uint64": "<u8", "int64": "<i8", "float64": "<f8"}
_FROM_NUMPY = {np.dtype(v).str: k for k, v in _NUMPY.items()}
_ARRAY_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.float64): "f64",
                 np.dtype(np.int8): "i8", np.dtype(np.int16): "i16", np.dtype(np.int32): "i32",
                 np.dtype(np.int64): "i64"}


@dataclass(frozen=True)
class Value:
    """A metadata value with an explicit GGUF type: "uint32", "float64", "array[uint8]", ..."""

    value: Any
    type: str


def _infer(value) -> str:
    if isinstance(value, Value):
        return value.type
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, np.generic):
        return _FROM_NUMPY[value.dtype.newbyteorder("<").str if value.dtype.itemsize > 1 else value.dtype.str]
    if isinstance(value, int):
        return "int32" if -(2**31) <= value < 2**31 else "int64"
    if isinstance(value, float):
        return "float32"
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError("metadata arrays must be one-dimensional")
        dt = value.dtype.newbyteorder("<") if value.dtype.itemsize > 1 else value.dtype
        if dt.str not in _FROM_NUMPY:
            raise TypeError(f"no GGUF type for NumPy dtype {value.dtype}")
        return f"array[{_FROM_NUMPY[dt.str]}]"
    if isinstance(value, Sequence):
        if not value:
            return "array[int32]"
        return f"array[{_infer(value[0])}]"
    raise TypeError(f"no GGUF type for {type(value).__name__}")


def _split(type_name: str) -> tuple[str, str | None]:
    if type_name.startswith("array[") and type_name.endswith("]"):
        return "array", type_name[6:-1]
    if type_name == "array":
        return "array", "int32"
    return type_name, None


def _encode(value, type_name: str):
    """(type id, payload) as _C.gguf_write takes them."""
    if isinstance(value, Value):
        value = value.value
    base, elem = _split(type_name)
    if base not in _TYPE_ID:
        raise ValueError(f"unknown GGUF value type '{type_name}'")
    if base != "array":
        if base == "string":
            return _TYPE_ID[base], value
        if base in ("float32", "float64"):
            return _TYPE_ID[base], float(value)
        if base == "bool":
            return _TYPE_ID[base], bool(value)
        return _TYPE_ID[base], int(value)
    elem_base, _ = _split(elem)
    if elem_base in _NUMPY:
        if isinstance(value, np.ndarray):
            packed = value.astype(_NUMPY[elem_base], casting="unsafe" if elem_base == "bool" else "same_kind")
        else:  # a list: each item converted to the element type ([] and 2**64 - 1 included)
            packed = np.array(value, dtype=_NUMPY[elem_base])
        return _TYPE_ID["array"], (_TYPE_ID[elem_base], packed.tobytes())
    if elem_base == "string":
        return _TYPE_ID["array"], (_TYPE_ID["string"], list(value))
    if elem_base == "array":
        return _TYPE_ID["array"], (_TYPE_ID["array"], [_encode(v, elem)[1] for v in value])
    raise ValueError(f"unknown GGUF value type '{type_name}'")


def _tensor(name: str, t) -> tuple:
    """(name, dtype, ne in GGML order, buffer)."""
    if isinstance(t, _C.TensorView):
        return (name, t.dtype, tuple(reversed(t.shape)), t)
    if isinstance(t, tuple):
        dtype, data, shape = t
        return (name, dtype, tuple(int(d) for d in reversed(tuple(shape))), np.ascontiguousarray(data))
    arr = np.ascontiguousarray(t)
    dtype = _ARRAY_DTYPES.get(arr.dtype)
    if dtype is None:
        raise TypeError(f"tensor '{name}': NumPy dtype {arr.dtype} has no GGUF type; pass (dtype, raw, shape)")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    return (name, dtype, tuple(reversed(arr.shape)), arr)


def _kvs(metadata: Mapping[str, Any] | None, types: Mapping[str, str] | None) -> list:
    types = types or {}
    kvs = []
    for key, value in (metadata or {}).items():
        type_name = types.get(key) or _infer(value)
        tid, payload = _encode(value, type_name)
        kvs.append((key, tid, payload))
    return kvs


def _format_of(path: str, format: str | None) -> str:
    if format is None:
        return "tl" if path.endswith(".tl") else "gguf"
    if format not in ("gguf", "tl"):
        raise ValueError(f"format must be 'gguf' or 'tl', got {format!r}")
    return format


def write(path: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
          tensors: Mapping[str, Any] | None = None, *, types: Mapping[str, str] | None = None,
          version: int = 3, format: str | None = None) -> None:
    """Write a GGUF file (or a torchless .tl file: format="tl", the default for a path ending
    in .tl). `tensors` maps names to NumPy arrays (f32, f16, f64, i8..i64), TensorViews
    (copied as they are, quantized or not) or (dtype, raw, shape) tuples with raw blocks as
    `torchless.quantize` returns them and shape in NumPy order."""
    path = os.fspath(path)
    ts = [_tensor(name, t) for name, t in (tensors or {}).items()]
    _C.write_model(path, _format_of(path, format), version, _kvs(metadata, types), ts)


def write_model(path: str | os.PathLike, metadata: Mapping[str, Any] | None,
                tensors: Sequence[tuple[str, str, Sequence[int]]], fill: Callable[[int], Any], *,
                types: Mapping[str, str] | None = None, format: str | None = None, version: int = 3) -> None:
    """Write a GGUF or .tl file streaming the tensor data: only one tensor is held at a time.

    path:     the file to write ("x.tl" -> format "tl" unless `format` says; else "gguf").
    metadata: key -> value, typed as in `write` (inference, `Value(x, "uint32")`, or `types`).
    tensors:  [(name, dtype, shape)] in file order: dtype a torchless dtype name ("f32",
              "f16", "bf16", "q4_k", ...; GGUF takes GGML types only), shape in NumPy order
              (rows last-but-one, elements per row last; a quantized row's length counts
              elements, not bytes).
    fill:     fill(i) -> the bytes of tensors[i]: any buffer (NumPy array of any dtype,
              bytes, TensorView) of exactly the tensor's size (`torchless.quantize` output for
              quantized dtypes). Called once per tensor, in order, while the file is written,
              with the GIL held only during the call; the buffer is released before fill(i+1).
              An exception from fill stops the write, removes the file and propagates.
    types:    key -> GGUF value type name, overriding inference.
    version:  GGUF version (2 or 3); ignored for .tl.

    Everything that can be checked up front (names, dtypes, shapes, metadata) is checked
    before the file is created; on any error no file is left behind. The result is byte for
    byte what `write` produces for the same metadata and tensors."""
    path = os.fspath(path)
    infos = []
    for name, dtype, shape in tensors:
        shape = tuple(int(d) for d in shape) or (1,)
        infos.append((name, dtype, tuple(reversed(shape))))
    if not callable(fill):
        raise TypeError("fill must be callable: fill(i) -> the bytes of tensor i")

    def source(i: int):
        data = fill(i)
        if isinstance(data, np.ndarray) and not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)  # a transposed or sliced array: its bytes in row-major order
        return data

    _C.write_model(path, _format_of(path, format), version, _kvs(metadata, types), infos, source)
