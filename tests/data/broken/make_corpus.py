#!/usr/bin/env python3
"""Writes the broken-file corpus (tests/data/broken/) and the fuzz seed corpora
(tests/fuzz/corpus/<target>/), from scratch with struct and json.

Each broken file is a small valid GGUF, safetensors, torchless .tl or llama2.c
checkpoint file with one thing wrong.
MANIFEST.tsv lists every file with the phrase its reader's error message must
contain and the status it must fail with ("format error", "unsupported",
"not found": ValueError, ValueError, FileNotFoundError in Python).

    PYTHONPATH=<site with torchless> python tests/data/broken/make_corpus.py

After writing, every file is opened with torchless.load (unless --no-check) and
the run fails if one loads, fails with another status, or gives a message
without its phrase: the phrases come from the readers' actual messages.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SEEDS = REPO / "tests" / "fuzz" / "corpus"

FORMAT, UNSUPPORTED, NOT_FOUND = "format error", "unsupported", "not found"

# ---------------------------------------------------------------- GGUF encoding (GGUF spec, little-endian)

# metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# tensor types (ggml_type)
T_F32, T_F16, T_Q4_0 = 0, 1, 2


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def u64(x: int) -> bytes:
    return struct.pack("<Q", x)


def gstr(x: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string: u64 length + bytes (length may lie)."""
    b = x.encode() if isinstance(x, str) else x
    return u64(len(b) if length is None else length) + b


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def arr(elem_type: int, n: int, items: bytes) -> bytes:
    """The payload of an ARRAY value."""
    return u32(elem_type) + u64(n) + items


def tinfo(name: str, ne: list[int], dtype: int, offset: int) -> bytes:
    """A tensor info: name, n_dims, ne[] (GGML order), type, offset into the data section."""
    return gstr(name) + u32(len(ne)) + b"".join(u64(d) for d in ne) + u32(dtype) + u64(offset)


def gguf(kvs: list[bytes], tinfos: list[bytes], data: bytes = b"", *, magic: bytes = b"GGUF",
         version: bytes = u32(3), n_tensors: int | None = None, n_kv: int | None = None,
         alignment: int = 32) -> bytes:
    head = magic + version + u64(len(tinfos) if n_tensors is None else n_tensors) + u64(
        len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tinfos)
    if tinfos:
        body += b"\0" * (-len(body) % alignment)
    return body + data


F32_DATA = struct.pack("<8f", 0.5, -1.0, 2.0, 0.25, 3.0, -4.0, 1.5, 8.0)  # tensor "tok.weight" f32 [4, 2]
Q4_0_BLOCK = struct.pack("<e", 0.125) + bytes(range(16))                  # tensor "blk.0.q" q4_0 [32]

GOOD_KVS = [
    kv("general.architecture", STRING, gstr("llama")),
    kv("llama.block_count", U32, u32(1)),
    kv("tokenizer.ggml.scores", ARRAY, arr(F32, 4, struct.pack("<4f", 0, -1, -2, -3))),
    kv("tokenizer.ggml.tokens", ARRAY, arr(STRING, 2, gstr("a") + gstr("bc"))),
]
GOOD_TINFOS = [tinfo("tok.weight", [4, 2], T_F32, 0), tinfo("blk.0.q", [32], T_Q4_0, 32)]
GOOD_DATA = F32_DATA + Q4_0_BLOCK


def good_gguf(**kw) -> bytes:
    return gguf(GOOD_KVS, GOOD_TINFOS, GOOD_DATA, **kw)


def one_tensor(ne: list[int], dtype: int = T_F32, offset: int = 0, data: bytes = F32_DATA,
               kvs: list[bytes] | None = None, name: str = "t") -> bytes:
    return gguf(GOOD_KVS[:1] if kvs is None else kvs, [tinfo(name, ne, dtype, offset)], data)


def with_alignment(value_type: int, payload: bytes) -> bytes:
    return gguf([kv("general.alignment", value_type, payload)], GOOD_TINFOS[:1], F32_DATA)


def nested_arrays(depth: int) -> bytes:
    """An ARRAY value whose elements are arrays, depth levels down, ending in an empty int32 array."""
    payload = arr(I32, 0, b"")
    for _ in range(depth - 1):
        payload = arr(ARRAY, 1, payload)
    return payload


# Offsets inside the good file, for the truncations.
HEADER = 24
KV0 = HEADER                              # "general.architecture": string key at KV0, its bytes at KV0 + 8
KV1 = KV0 + len(GOOD_KVS[0])              # "llama.block_count": u32 value at KV1 + 8 + 17 + 4
KV2 = KV1 + len(GOOD_KVS[1])              # "tokenizer.ggml.scores": 4 floats at KV2 + 8 + 21 + 4 + 12
KV3 = KV2 + len(GOOD_KVS[2])              # "tokenizer.ggml.tokens": strings at KV3 + 8 + 21 + 4 + 12
TI0 = KV3 + len(GOOD_KVS[3])
TI1 = TI0 + len(GOOD_TINFOS[0])           # "blk.0.q": n_dims at TI1 + 8 + 7, ne[0] at TI1 + 19
INFO_END = TI1 + len(GOOD_TINFOS[1])
DATA = INFO_END + (-INFO_END % 32)
assert INFO_END % 32, "the truncation before the data section needs unaligned tensor infos"


# ---------------------------------------------------------------- safetensors encoding

def st(header: dict | str | bytes, data: bytes = b"", header_len: int | None = None) -> bytes:
    """u64 header length + JSON header + data buffer (huggingface/safetensors "Format")."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    h = header.encode() if isinstance(header, str) else header
    return u64(len(h) if header_len is None else header_len) + h + data


def entry(dtype: str = "F32", shape: list | None = None, offsets: list | None = None) -> dict:
    return {"dtype": dtype, "shape": [2, 2] if shape is None else shape,
            "data_offsets": [0, 16] if offsets is None else offsets}


ST_DATA = struct.pack("<4f", 1.0, -2.0, 0.5, 4.0)


def good_st() -> bytes:
    return st({"__metadata__": {"format": "pt"}, "w": entry(), "b": entry("F16", [2], [16, 20])},
              ST_DATA + struct.pack("<2e", 1.0, -1.0))


# ---------------------------------------------------------------- torchless .tl encoding (docs/format.md)

def tl(header: dict | str | bytes, payload: bytes = b"", *, magic: bytes = b"TLESS\0\0\0", version: int = 1,
       header_len: int | None = None) -> bytes:
    """magic + u32 version + u64 header length + JSON header + zeros to 64 + payload."""
    if isinstance(header, dict):
        header = json.dumps(header)
    h = header.encode() if isinstance(header, str) else header
    head = magic + u32(version) + u64(len(h) if header_len is None else header_len) + h
    return head + b"\0" * (-len(head) % 64) + payload


def tl_tensor(dtype: str, shape: list, offset: int, nbytes: int, **extra) -> dict:
    return {"dtype": dtype, "shape": shape, "offset": offset, "nbytes": nbytes, **extra}


TL_METADATA = {
    "general.architecture": {"type": "string", "value": "llama"},
    "llama.block_count": {"type": "uint32", "value": 1},
    "tokenizer.ggml.scores": {"type": "array[float32]", "value": [0.0, -1.0, -2.5, "-inf"]},
    "tokenizer.ggml.tokens": {"type": "array[string]", "value": ["a", "bc", {"hex": "ff00"}]},
}
TL_TENSORS = {"tok.weight": tl_tensor("f32", [2, 4], 0, 32), "blk.0.q": tl_tensor("q4_0", [32], 64, 18)}
TL_PAYLOAD = F32_DATA + b"\0" * 32 + Q4_0_BLOCK


def good_tl(metadata: dict | None = None, tensors: dict | None = None, payload: bytes = TL_PAYLOAD, **kw) -> bytes:
    return tl({"metadata": TL_METADATA if metadata is None else metadata,
               "tensors": TL_TENSORS if tensors is None else tensors}, payload, **kw)


def one_tl_tensor(**fields) -> bytes:
    return good_tl(tensors={"t": dict(tl_tensor("f32", [2, 4], 0, 32), **fields)}, payload=F32_DATA)


def tl_metadata(entry) -> bytes:
    return good_tl(metadata={"k": entry}, tensors={}, payload=b"")


def tl_nested(depth: int) -> dict:
    value = {"type": "array[int32]", "value": []}
    for _ in range(depth - 1):
        value = {"type": "array[array]", "value": [value]}
    return value


# ---------------------------------------------------------------- llama2.c checkpoints (karpathy/llama2.c)

# dim 8, hidden 8, 1 layer, 2 heads, 1 kv head, vocab 4, seq_len 4: head size 4
L2C = dict(dim=8, hidden=8, layers=1, heads=2, kv_heads=1, vocab=4, seq=4)


def l2c_params(**kw) -> bytes:
    p = dict(L2C, **kw)
    return struct.pack("<7i", p["dim"], p["hidden"], p["layers"], p["heads"], p["kv_heads"], p["vocab"], p["seq"])


def l2c_floats(version: int, shared: bool = True) -> int:
    d, h, L, hs, v = L2C["dim"], L2C["hidden"], L2C["layers"], L2C["dim"] // L2C["heads"], L2C["vocab"]
    kv = hs * L2C["kv_heads"]
    n = v * d + 2 * L * d + d + L * d * (2 * d + 2 * kv) + 3 * L * d * h
    return n + (L2C["seq"] * hs if version == 0 else 0) + (0 if shared else v * d)


def l2c_weights(n: int) -> bytes:
    return struct.pack(f"<{n}f", *[((i * 37) % 17 - 8) / 16 for i in range(n)])


def l2c_v0(**kw) -> bytes:
    return l2c_params(**kw) + l2c_weights(l2c_floats(0))


def l2c_v1(version: int = 1, shared: int = 1, **kw) -> bytes:
    head = u32(0x616B3432) + struct.pack("<i", version) + l2c_params(**kw) + bytes([shared])
    return head + b"\0" * (256 - len(head)) + l2c_weights(l2c_floats(1))


def l2c_v2(group_size: int = 8) -> bytes:
    """export.py version2_export: float32 norms, then each matrix as int8 values + float32 scales."""
    d, h, L, v = L2C["dim"], L2C["hidden"], L2C["layers"], L2C["vocab"]
    kv = d // L2C["heads"] * L2C["kv_heads"]
    head = u32(0x616B3432) + struct.pack("<i", 2) + l2c_params() + bytes([1]) + struct.pack("<i", group_size)
    body = l2c_weights(2 * L * d + d)
    for n in [v * d] + [d * d] * L + [d * kv] * L * 2 + [d * d] * L + [d * h] * L * 3:
        body += bytes((i * 7) % 256 for i in range(n)) + struct.pack(f"<{n // 8}f", *[0.01] * (n // 8))
    return head + b"\0" * (256 - len(head)) + body


# ---------------------------------------------------------------- the corpus

# (file name, content, expected phrase, expected status). Content bytes, or for an
# index case a dict of file name -> bytes written into a folder of that name.
CASES: list[tuple[str, bytes | dict, str, str]] = [
    # -- GGUF: header
    ("gguf-empty.gguf", b"", "file truncated reading magic", FORMAT),
    ("gguf-bad-magic.gguf", b"GGUX" + good_gguf()[4:], "bad magic 47 47 55 58", FORMAT),
    ("gguf-version-0.gguf", good_gguf(version=u32(0)), "unknown GGUF version 0", UNSUPPORTED),
    ("gguf-version-1.gguf", good_gguf(version=u32(1)), "GGUF version 1 is not supported", UNSUPPORTED),
    ("gguf-version-4.gguf", good_gguf(version=u32(4)), "unknown GGUF version 4", UNSUPPORTED),
    ("gguf-big-endian-version.gguf", good_gguf(version=struct.pack(">I", 3)), "big-endian GGUF", UNSUPPORTED),
    ("gguf-big-endian-magic.gguf", good_gguf(magic=b"FUGG"), "big-endian GGUF", UNSUPPORTED),
    ("gguf-tensor-count-2e64.gguf", good_gguf(n_tensors=2**64 - 1),
     "tensor count 18446744073709551615 cannot fit", FORMAT),
    ("gguf-kv-count-2e63.gguf", good_gguf(n_kv=2**63), "metadata count 9223372036854775808 cannot fit", FORMAT),
    # -- GGUF: truncated inside each section
    ("gguf-trunc-header.gguf", good_gguf()[:13], "file truncated reading tensor count", FORMAT),
    ("gguf-trunc-in-key.gguf", gguf(GOOD_KVS[:1], [])[:KV0 + 8 + 5], "metadata key at offset 24 has length 20, past the end",
     FORMAT),
    ("gguf-trunc-in-value.gguf", good_gguf()[:KV1 + 8 + 17 + 4 + 2], "file truncated reading metadata value",
     FORMAT),
    ("gguf-trunc-in-array.gguf", good_gguf()[:KV2 + 8 + 21 + 4 + 12 + 6],
     "array of 4 float32 elements does not fit", FORMAT),
    ("gguf-trunc-in-string-array.gguf", good_gguf()[:KV3 + 8 + 21 + 4 + 12 + 8 + 1 + 8 + 1],
     "array string at offset", FORMAT),
    ("gguf-trunc-in-tensor-info.gguf", good_gguf()[:TI1 + 19 + 3], "file truncated reading tensor dimension", FORMAT),
    ("gguf-trunc-before-data.gguf", good_gguf()[:INFO_END], "starts past the end of the file", FORMAT),
    ("gguf-trunc-in-data.gguf", good_gguf()[:DATA + 32 + 9], "tensor 'blk.0.q' extends past end of file", FORMAT),
    # -- GGUF: metadata values
    ("gguf-key-length-2e64.gguf", gguf([gstr("general.architecture", 2**64 - 1)[:8] + b"general.arch"], []),
     "has length 18446744073709551615, past the end of the file", FORMAT),
    ("gguf-string-just-past-eof.gguf", gguf([kv("general.name", STRING, gstr("tiny", 5))], []),
     "string value at offset 48 has length 5, past the end of the file (4 bytes left)", FORMAT),
    ("gguf-array-length-huge.gguf", gguf([kv("x", ARRAY, arr(U8, 2**62, b"\1\2\3"))], []),
     "array of 4611686018427387904 uint8 elements does not fit", FORMAT),
    ("gguf-array-of-strings-huge.gguf", gguf([kv("x", ARRAY, arr(STRING, 2**60, gstr("a")))], []),
     "array of 1152921504606846976 string elements does not fit", FORMAT),
    ("gguf-unknown-value-type.gguf", gguf([kv("general.name", 13, gstr("x"))], []), "unknown value type 13", FORMAT),
    ("gguf-value-type-2e32.gguf", gguf([kv("general.name", 2**32 - 1, gstr("x"))], []),
     "unknown value type 4294967295", FORMAT),
    ("gguf-unknown-array-element-type.gguf", gguf([kv("x", ARRAY, arr(13, 1, b"\0" * 8))], []),
     "unknown array element type 13", FORMAT),
    ("gguf-arrays-nested-100.gguf", gguf([kv("x", ARRAY, nested_arrays(100))], []),
     "arrays nested deeper than", FORMAT),
    # the message quotes the key's bytes, which are not UTF-8: Python must still raise ValueError naming the file
    ("gguf-key-not-utf8.gguf", gguf([kv(b"general.\xa4\xff", 99, u32(0))], []), "has unknown value type 99", FORMAT),
    ("gguf-bool-value-2.gguf", gguf([kv("general.flag", BOOL, b"\2")], []), "bool value 2 (must be 0 or 1)", FORMAT),
    ("gguf-bool-array-element-7.gguf", gguf([kv("flags", ARRAY, arr(BOOL, 3, b"\0\7\1"))], []),
     "bool element 1 has value 7", FORMAT),
    ("gguf-duplicate-key.gguf", gguf(GOOD_KVS + [GOOD_KVS[1]], GOOD_TINFOS, GOOD_DATA),
     "duplicate metadata key 'llama.block_count'", FORMAT),
    ("gguf-alignment-0.gguf", with_alignment(U32, u32(0)), "general.alignment 0 is not a power of two", FORMAT),
    ("gguf-alignment-3.gguf", with_alignment(U32, u32(3)), "general.alignment 3 is not a power of two", FORMAT),
    ("gguf-alignment-string.gguf", with_alignment(STRING, gstr("32")),
     "general.alignment has type string (must be uint32)", FORMAT),
    # -- GGUF: tensor infos
    ("gguf-duplicate-tensor.gguf",
     gguf(GOOD_KVS, [tinfo("tok.weight", [4, 2], T_F32, 0), tinfo("tok.weight", [8], T_F32, 32)], F32_DATA * 2),
     "duplicate tensor name 'tok.weight'", FORMAT),
    ("gguf-tensor-name-nul.gguf", one_tensor([8], name="tok\0weight"), "tensor name 'tok' contains a NUL character",
     FORMAT),
    ("gguf-tensor-past-eof.gguf", one_tensor([4, 2], offset=4096), "tensor 't' extends past end of file", FORMAT),
    ("gguf-offset-overflow.gguf", one_tensor([4, 2], offset=2**64 - 32), "tensor 't' extends past end of file",
     FORMAT),
    ("gguf-overlap.gguf",
     gguf(GOOD_KVS, [tinfo("tok.weight", [4, 2], T_F32, 0), tinfo("blk.0.q", [32], T_Q4_0, 0)], GOOD_DATA),
     "overlap", FORMAT),
    # regression: an empty tensor between two overlapping ones hid the overlap
    ("gguf-overlap-past-empty.gguf",
     gguf(GOOD_KVS, [tinfo("big", [16], T_F32, 0), tinfo("empty", [0], T_F32, 32), tinfo("inner", [4], T_F32, 32)],
          F32_DATA * 2),
     "tensors 'big' [0, 64) and 'inner' [32, 48) overlap", FORMAT),
    ("gguf-misaligned-offset.gguf", one_tensor([4], offset=33, data=F32_DATA * 2),
     "offset 33 is not a multiple of the alignment 32", FORMAT),
    ("gguf-dtype-99.gguf", one_tensor([8], dtype=99), "unknown or unsupported type 99", UNSUPPORTED),
    ("gguf-dtype-iq2-xxs.gguf", one_tensor([256], dtype=16, data=bytes(66)), "unknown or unsupported type 16",
     UNSUPPORTED),
    ("gguf-dtype-64-not-ggml.gguf", one_tensor([8], dtype=64), "unknown or unsupported type 64", UNSUPPORTED),
    ("gguf-5-dims.gguf", one_tensor([2, 2, 2, 1, 1]), "has 5 dimensions (1 to 4 allowed)", FORMAT),
    ("gguf-0-dims.gguf", one_tensor([]), "has 0 dimensions (1 to 4 allowed)", FORMAT),
    ("gguf-dim-2e63.gguf", one_tensor([2**63, 1]), "dimension 0 is 9223372036854775808 (too large)", FORMAT),
    ("gguf-q4-0-row-33.gguf", one_tensor([33], dtype=T_Q4_0, data=Q4_0_BLOCK * 2),
     "row of 33 elements is not a whole number of q4_0 blocks of 32", FORMAT),
    ("gguf-shape-bytes-overflow.gguf", one_tensor([2**32, 2**32]), "shape [4294967296, 4294967296, 1, 1] is too large",
     FORMAT),
    # regression: a zero dimension made the size 0 while ne[0] * ne[1] overflowed int64
    ("gguf-shape-zero-hides-overflow.gguf", one_tensor([2**62, 4, 0], dtype=T_Q4_0),
     "shape [4611686018427387904, 4, 0, 1] is too large", FORMAT),
    ("gguf-shape-zero-rows-overflow.gguf", one_tensor([0, 2**62, 4]), "shape [0, 4611686018427387904, 4, 1] is too large",
     FORMAT),

    # -- safetensors: header
    ("st-too-short.safetensors", b"\x10\0\0", "too short for a safetensors header", FORMAT),
    ("st-header-length-past-eof.safetensors", st({"w": entry()}, ST_DATA, header_len=4096),
     "header length 4096 extends past the end of the file", FORMAT),
    ("st-header-length-2e64.safetensors", st({"w": entry()}, ST_DATA, header_len=2**64 - 1),
     "header length 18446744073709551615 extends past the end of the file", FORMAT),
    ("st-header-length-0.safetensors", st(b"", ST_DATA), "header: line 1, column 1", FORMAT),
    ("st-header-not-json.safetensors", st(b"hello, world", ST_DATA), "header: line 1, column 1", FORMAT),
    ("st-header-not-object.safetensors", st("[1, 2]", ST_DATA), "header is an array, expected a JSON object",
     FORMAT),
    ("st-header-truncated-json.safetensors", st('{"w":{"dtype":"F32","shape":[2,2],"data_off', ST_DATA),
     "header: line 1, column 35: unterminated string", FORMAT),
    ("st-header-invalid-utf8.safetensors", st(b'{"w\xff\xfe":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}',
                                              ST_DATA), "UTF-8", FORMAT),
    ("st-header-duplicate-key.safetensors",
     st('{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[4],'
        '"data_offsets":[0,16]}}', ST_DATA), "duplicate object key 'w'", FORMAT),
    ("st-metadata-not-string.safetensors", st({"__metadata__": {"n": 3}, "w": entry()}, ST_DATA),
     "__metadata__ value of 'n' is a number, expected a string", FORMAT),
    # -- safetensors: tensor entries
    ("st-offsets-lie.safetensors", st({"w": entry(offsets=[0, 12])}, ST_DATA),
     "data_offsets [0, 12] do not match shape [2, 2] of F32 (16 bytes)", FORMAT),
    ("st-offsets-past-data.safetensors", st({"w": entry(offsets=[8, 24])}, ST_DATA),
     "data_offsets [8, 24] extend past the end of the data (16 bytes", FORMAT),
    ("st-offsets-begin-after-end.safetensors", st({"w": entry(offsets=[16, 0])}, ST_DATA),
     "data_offsets [16, 0] end before they begin", FORMAT),
    ("st-offsets-negative.safetensors", st({"w": entry(offsets=[-16, 0])}, ST_DATA),
     "data_offsets must be an array of two non-negative integers", FORMAT),
    ("st-offsets-three.safetensors", st({"w": entry(offsets=[0, 16, 32])}, ST_DATA),
     "data_offsets must be an array of two non-negative integers", FORMAT),
    ("st-overlap.safetensors", st({"a": entry("F32", [2], [0, 8]), "b": entry("F32", [2], [4, 12])}, ST_DATA),
     "tensors 'a' data_offsets [0, 8] and 'b' [4, 12] overlap", FORMAT),
    ("st-dtype-f8-e4m3.safetensors", st({"w": entry("F8_E4M3", [4], [0, 4])}, ST_DATA),
     "has dtype F8_E4M3, which torchless does not support", UNSUPPORTED),
    ("st-dtype-xyz.safetensors", st({"w": entry("XYZ")}, ST_DATA), "has unknown dtype 'XYZ'", UNSUPPORTED),
    ("st-dtype-not-string.safetensors", st({"w": entry(7)}, ST_DATA), "dtype is a number, expected a string", FORMAT),
    ("st-shape-negative.safetensors", st({"w": entry(shape=[-2, 2])}, ST_DATA),
     "shape dimension 0 is -2, expected a non-negative integer", FORMAT),
    ("st-shape-float.safetensors", st({"w": entry(shape=[2.0, 2])}, ST_DATA),
     "shape dimension 0 is 2.0, expected a non-negative integer", FORMAT),
    ("st-shape-5-dims.safetensors", st({"w": entry(shape=[2, 2, 1, 1, 1])}, ST_DATA),
     "has 5 dimensions; torchless supports at most 4", UNSUPPORTED),
    ("st-shape-elements-overflow.safetensors", st({"w": entry(shape=[2**40, 2**40])}, ST_DATA),
     "shape has too many elements", FORMAT),
    ("st-shape-bytes-overflow.safetensors", st({"w": entry("F64", shape=[2**62])}, ST_DATA),
     "shape is too large in bytes", FORMAT),
    ("st-missing-dtype.safetensors", st({"w": {"shape": [2, 2], "data_offsets": [0, 16]}}, ST_DATA),
     "tensor 'w' has no 'dtype'", FORMAT),
    ("st-missing-shape.safetensors", st({"w": {"dtype": "F32", "data_offsets": [0, 16]}}, ST_DATA),
     "tensor 'w' has no 'shape'", FORMAT),
    ("st-missing-offsets.safetensors", st({"w": {"dtype": "F32", "shape": [2, 2]}}, ST_DATA),
     "tensor 'w' has no 'data_offsets'", FORMAT),
    ("st-unexpected-key.safetensors", st({"w": dict(entry(), offset=0)}, ST_DATA),
     "tensor 'w' has an unexpected key 'offset'", FORMAT),
    ("st-entry-not-object.safetensors", st({"w": [0, 16]}, ST_DATA), "tensor 'w' entry is an array, expected an object",
     FORMAT),

    # -- safetensors index: a folder with the index and its (good) shard
    ("index-missing-shard", {"model.safetensors.index.json": json.dumps(
        {"metadata": {"total_size": 20}, "weight_map": {"w": "model-00001-of-00002.safetensors"}}).encode()},
     "model-00001-of-00002.safetensors", NOT_FOUND),
    ("index-shard-dotdot", {"model.safetensors.index.json": json.dumps(
        {"weight_map": {"w": "../st-overlap.safetensors"}}).encode()},
     "names shard '../st-overlap.safetensors', which is not a plain file name", FORMAT),
    ("index-tensor-not-in-shard", {
        "model.safetensors.index.json": json.dumps(
            {"weight_map": {"w": "model-00001-of-00001.safetensors",
                            "lm_head.weight": "model-00001-of-00001.safetensors"}}).encode(),
        "model-00001-of-00001.safetensors": good_st()},
     "tensor 'lm_head.weight' is not in its shard 'model-00001-of-00001.safetensors'", FORMAT),
    ("index-broken-shard", {
        "model.safetensors.index.json": json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}).encode(),
        "model-00001-of-00001.safetensors": st({"w": entry(offsets=[0, 12])}, ST_DATA)},
     "shard 'model-00001-of-00001.safetensors': safetensors:", FORMAT),
    ("index-no-weight-map", {"model.safetensors.index.json": b'{"metadata": {}}'}, "index has no 'weight_map'",
     FORMAT),
    ("st-shape-zero-hides-overflow.safetensors", st({"w": entry(shape=[0, 2**62, 4], offsets=[0, 0])}, ST_DATA),
     "shape has too many elements", FORMAT),
    # -- torchless .tl: prefix and header
    ("tl-empty.tl", b"", "file truncated in the 20-byte prefix", FORMAT),
    ("tl-bad-magic.tl", b"TLESX" + good_tl()[5:], "bad magic", FORMAT),
    ("tl-version-2.tl", good_tl(version=2), "unknown format version 2", UNSUPPORTED),
    ("tl-header-past-eof.tl", good_tl(header_len=2**64 - 1), "header of 18446744073709551615 bytes extends past end",
     FORMAT),
    ("tl-header-not-json.tl", tl("{oops"), "header: line 1", FORMAT),
    ("tl-header-not-object.tl", tl("[]"), "header must be an object with", FORMAT),
    ("tl-header-no-tensors.tl", tl({"metadata": {}}), "header must be an object with", FORMAT),
    ("tl-header-duplicate-tensor.tl", tl('{"metadata": {}, "tensors": {"t": 1, "t": 2}}'), "duplicate", FORMAT),
    # -- .tl metadata
    ("tl-metadata-untyped.tl", tl_metadata(5), "metadata 'k': expected {", FORMAT),
    ("tl-metadata-unknown-type.tl", tl_metadata({"type": "u33", "value": 1}), "unknown value type 'u33'", FORMAT),
    ("tl-metadata-uint8-300.tl", tl_metadata({"type": "uint8", "value": 300}), "integer out of range", FORMAT),
    ("tl-metadata-uint64-2e64.tl", tl_metadata({"type": "uint64", "value": 2**64}), "out of range for uint64", FORMAT),
    ("tl-metadata-float32-1e39.tl", tl_metadata({"type": "float32", "value": 1e39}), "out of float32 range", FORMAT),
    ("tl-metadata-float-word.tl", tl_metadata({"type": "float32", "value": "big"}), "a float must be a number", FORMAT),
    ("tl-metadata-bad-hex.tl", tl_metadata({"type": "string", "value": {"hex": "zz"}}), "not a hex digit", FORMAT),
    ("tl-metadata-array-not-list.tl", tl_metadata({"type": "array[int32]", "value": 5}), "expected a JSON array",
     FORMAT),
    ("tl-metadata-bool-array-int.tl", tl_metadata({"type": "array[bool]", "value": [1]}), "expected true or false",
     FORMAT),
    ("tl-metadata-nested-too-deep.tl", tl_metadata(tl_nested(10)), "arrays nested too deeply", FORMAT),
    ("tl-metadata-array-of-int-in-array.tl", tl_metadata({"type": "array[array]", "value": [{"type": "int32", "value": 1}]}),
     "an item of an array[array] must be an array", FORMAT),
    # -- .tl tensors
    ("tl-tensor-unknown-dtype.tl", one_tl_tensor(dtype="q9_9"), "unknown dtype q9_9", UNSUPPORTED),
    ("tl-tensor-nbytes-lie.tl", one_tl_tensor(nbytes=31), "nbytes 31 does not match", FORMAT),
    ("tl-tensor-misaligned.tl", one_tl_tensor(offset=32), "offset 32 is not a multiple of 64", FORMAT),
    ("tl-tensor-past-eof.tl", one_tl_tensor(offset=64), "tensor 't' extends past end of file", FORMAT),
    ("tl-tensor-offset-2e63.tl", one_tl_tensor(offset=2**63 - 64), "extends past end of file", FORMAT),
    ("tl-tensor-offset-negative.tl", one_tl_tensor(offset=-64), "offset must be a non-negative integer", FORMAT),
    ("tl-tensor-5-dims.tl", one_tl_tensor(shape=[1, 1, 1, 2, 4]), "shape must be a list of 1 to 4", FORMAT),
    ("tl-tensor-0-dims.tl", one_tl_tensor(shape=[]), "shape must be a list of 1 to 4", FORMAT),
    ("tl-tensor-negative-dim.tl", one_tl_tensor(shape=[-2, 4]), "a dimension must be a non-negative integer", FORMAT),
    ("tl-tensor-row-not-blocks.tl", one_tl_tensor(dtype="q4_0", shape=[33], nbytes=18),
     "not a whole number of blocks", FORMAT),
    ("tl-tensor-shape-overflow.tl", one_tl_tensor(shape=[2**40, 2**40, 64]), "shape is too large", FORMAT),
    ("tl-tensor-extra-key.tl", one_tl_tensor(align=64), "expected exactly", FORMAT),
    ("tl-tensor-name-nul.tl", good_tl(tensors={"a\0b": tl_tensor("f32", [2, 4], 0, 32)}, payload=F32_DATA),
     "name contains a NUL character", FORMAT),
    ("tl-tensor-overlap.tl", good_tl(tensors={"a": tl_tensor("f32", [2, 4], 0, 32), "b": tl_tensor("f32", [4], 0, 16)},
                                     payload=F32_DATA), "overlap", FORMAT),
    ("tl-payload-past-eof.tl", good_tl(tensors={"e": tl_tensor("f32", [0, 4], 0, 0)}, payload=b"")[:420],
     "payload at offset", FORMAT),
    ("tl-truncated-payload.tl", good_tl()[:-4], "tensor 'blk.0.q' extends past end of file", FORMAT),

    # -- llama2.c checkpoints
    ("l2c-v0-truncated.bin", l2c_v0()[:-4], "file truncated", FORMAT),
    ("l2c-v0-trailing-bytes.bin", l2c_v0() + b"\0" * 4, "trailing bytes", FORMAT),
    ("l2c-v0-header-only.bin", l2c_params(), "file truncated", FORMAT),
    ("l2c-v1-truncated.bin", l2c_v1()[:-100], "file truncated", FORMAT),
    ("l2c-v1-truncated-header.bin", l2c_v1()[:40], "file truncated in the 256-byte header", FORMAT),
    ("l2c-v1-flag-2.bin", l2c_v1(shared=2), "shared-classifier flag is 2", FORMAT),
    ("l2c-v2-group-size-0.bin", l2c_v1(version=2), "version 2 group size 0 (must be positive)", FORMAT),
    ("l2c-v2-group-size-48.bin", l2c_v2()[:37] + struct.pack("<i", 48) + l2c_v2()[41:],
     "not a whole number of groups of 48", FORMAT),
    ("l2c-v2-truncated.bin", l2c_v2()[:-1], "file truncated", FORMAT),
    ("l2c-v1-version-9.bin", l2c_v1(version=9), "unknown checkpoint version 9", UNSUPPORTED),
    ("l2c-v1-heads-3.bin", l2c_v1(heads=3), "implausible header", FORMAT),
    ("l2c-v1-kv-heads-0.bin", l2c_v1(kv_heads=0), "implausible header", FORMAT),
    # an implausible legacy header is not recognised as llama2.c: the safetensors reader says why it is not that
    ("l2c-v0-vocab-int32-min.bin", l2c_params(vocab=-(2**31)) + l2c_weights(8), "safetensors:", FORMAT),
    ("l2c-v1-negative-vocab.bin", l2c_v1(vocab=-4), "negative vocab_size -4", FORMAT),
    ("l2c-v1-too-large.bin", l2c_v1(dim=2**24, hidden=2**24, layers=2**24, heads=1, kv_heads=1),
     "too large to address", FORMAT),
]

# The fuzzers start from these (small, valid where they can be). Named *.seed: they are test
# inputs of a few hundred bytes, not models (the fuzzers read content, not names).
SEED_FILES = {
    "fuzz_gguf": {
        "good.gguf.seed": good_gguf(),
        "good-v2.gguf.seed": good_gguf(version=u32(2)),
        # data at an odd address: dequantized in place, a misaligned block
        "misaligned-q4_0.gguf.seed": gguf([kv("general.alignment", U32, u32(1))], [tinfo("qq", [32], T_Q4_0, 0)],
                                     Q4_0_BLOCK, alignment=1),
        "nested-arrays.gguf.seed": gguf([kv("x", ARRAY, nested_arrays(3)), kv("b", BOOL, b"\1"),
                                    kv("general.alignment", U32, u32(64))], GOOD_TINFOS[:1], F32_DATA, alignment=64),
    },
    "fuzz_safetensors": {
        "good.safetensors.seed": good_st(),
        # a header of odd length puts the F16 data at an odd address
        "misaligned-f16.safetensors.seed": st('{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}} ',
                                         struct.pack("<2e", 1.0, -1.0)),
        "scalar-and-empty.safetensors.seed": st({"s": entry("I32", [], [0, 4]), "e": entry("BF16", [0, 3], [4, 4]),
                                            "u": entry("U8", [3], [4, 7]), "t": entry("BOOL", [1], [7, 8])}, ST_DATA[:8]),
    },
    "fuzz_native": {
        "good.tl.seed": good_tl(),
        "nested.tl.seed": good_tl(metadata={"n": tl_nested(3), "big": {"type": "uint64", "value": 2**64 - 1},
                                            "f": {"type": "float64", "value": "nan"},
                                            "b": {"type": "array[bool]", "value": [True, False]}}),
        "llama2c-v0.bin.seed": l2c_v0(),
        "llama2c-v1.bin.seed": l2c_v1(),
        "llama2c-v2.bin.seed": l2c_v2(),
    },
    "fuzz_json": {
        "object.json": b'{"a": [1, -2.5e3, true, false, null], "b": {"c": "\\u00e9\\ud83d\\ude00\\n"}}',
        "numbers.json": b"[0, -0, 1e-400, 9223372036854775807, 9223372036854775808, 1.5E+2, 123456789012345678901]",
        "strings.json": "[\"\", \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\u00e9\u4e2d\U0001f600\"]".encode(),
        "deep.json": b"[" * 20 + b"{}" + b"]" * 20,
    },
}


# ---------------------------------------------------------------- writing and checking

def manifest_path(name: str, content: bytes | dict) -> str:
    return f"{name}/model.safetensors.index.json" if isinstance(content, dict) else name


def write_all() -> None:
    for p in HERE.iterdir():
        if p.name in ("make_corpus.py", "__pycache__"):
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    rows = ["# file\texpected phrase in the error message\texpected status (written by make_corpus.py)"]
    names = set()
    for name, content, phrase, status in CASES:
        assert name not in names, f"duplicate case {name}"
        names.add(name)
        assert "\t" not in phrase and "\n" not in phrase
        if isinstance(content, dict):
            (HERE / name).mkdir()
            for file, data in content.items():
                (HERE / name / file).write_bytes(data)
        else:
            (HERE / name).write_bytes(content)
        rows.append(f"{manifest_path(name, content)}\t{phrase}\t{status}")
    (HERE / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    for target, files in SEED_FILES.items():
        folder = SEEDS / target
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for file, data in files.items():
            (folder / file).write_bytes(data)


def check_all() -> int:
    import torchless

    exceptions = {FORMAT: ValueError, UNSUPPORTED: ValueError, NOT_FOUND: FileNotFoundError}
    bad = 0
    for name, content, phrase, status in CASES:
        path = str(HERE / manifest_path(name, content))
        try:
            torchless.load(path)
        except Exception as e:  # noqa: BLE001 - every outcome is reported
            msg = str(e)
            ok = type(e) is exceptions[status] and phrase in msg and path in msg
            if not ok:
                bad += 1
                print(f"MISMATCH {name}: {type(e).__name__}: {msg}\n    expected {status} with {phrase!r}")
        else:
            bad += 1
            print(f"LOADED   {name}: expected {status} with {phrase!r} (reader bug?)")
    for target, files in SEED_FILES.items():
        if target == "fuzz_json":
            continue
        for file in files:
            torchless.load(str(SEEDS / target / file))  # seeds must be valid
    print(f"{len(CASES)} broken files, {bad} mismatches")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-check", action="store_true", help="write the files without opening them")
    args = ap.parse_args()
    write_all()
    sizes = [p.stat().st_size for p in HERE.rglob("*") if p.is_file() and p.suffix not in (".py", ".tsv")]
    assert max(sizes) <= 4096 and sum(sizes) <= 200_000, (max(sizes), sum(sizes))
    return 0 if args.no_check else check_all()


if __name__ == "__main__":
    sys.exit(main())
