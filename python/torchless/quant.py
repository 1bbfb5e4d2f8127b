"""Quantize and dequantize arrays with the C kernels (GGUF block layouts, bit for bit)."""

from __future__ import annotations

import numpy as np

from . import _C


def quantize(array, dtype: str) -> np.ndarray:
    """Quantize the rows of a float array to `dtype` ("q4_0", "q4_k", "f16", ...).

    Returns uint8 with shape ``array.shape[:-1] + (bytes_per_row,)``: the blocks as GGUF
    stores them. The last dimension must be a whole number of blocks."""
    return _C.quantize(array, dtype)


def dequantize(data, dtype: str, shape, out: np.ndarray | None = None) -> np.ndarray:
    """Float32 values of `data` (raw blocks of `dtype`: bytes, a uint8 array or a
    TensorView), as an array of `shape` (NumPy order); written into `out` (a C-contiguous
    float32 array of as many elements) when given."""
    if isinstance(shape, int):
        shape = (shape,)
    return _C.dequantize(data, dtype, tuple(shape), out)


def dtype_info(dtype: str) -> dict:
    """The dtype table's row: name, id (GGML numbering), block_size, type_size, quantized."""
    return _C.dtype_info(dtype)


def dtypes() -> list[str]:
    """Every dtype name torchless knows."""
    return _C.dtypes()
