"""safetensors reading: files written by the `safetensors` package (and BF16 by hand),
sharded indexes, Hugging Face folders, and a corpus of broken headers that must raise
ValueError naming the problem."""

import json
import struct

import numpy as np
import pytest

import torchless
from safetensors.numpy import save_file

# safetensors dtype -> (our dtype name, NumPy dtype)
DTYPES = {
    "F64": ("f64", np.float64),
    "F32": ("f32", np.float32),
    "F16": ("f16", np.float16),
    "I64": ("i64", np.int64),
    "I32": ("i32", np.int32),
    "I16": ("i16", np.int16),
    "I8": ("i8", np.int8),
    "U8": ("u8", np.uint8),
    "BOOL": ("bool", np.bool_),
}


def random_array(rng, np_dtype, shape):
    """Seeded data that is never only zeros (unless the shape is empty)."""
    dt = np.dtype(np_dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dt.kind == "f":
        a = (rng.standard_normal(shape) * 10 ** rng.uniform(-3, 3, shape)).astype(dt)
        flat = a.reshape(-1)
        # (F64 values stay within float32 range: a double -> float overflow is undefined in C)
        big = min(float(np.finfo(dt).max), float(np.finfo(np.float32).max))
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dt).tiny, big], dt)
        flat[: min(flat.size, specials.size)] = specials[: flat.size]
        return a
    info = np.iinfo(dt)
    # |x| < 2**52: the int -> float32 cast then rounds once, in NumPy as in C
    lo, hi = max(info.min, -(2**52)), min(info.max, 2**52)
    return rng.integers(lo, hi, shape, dtype=dt, endpoint=True)


def random_shape(rng):
    ndim = int(rng.integers(1, 5))
    return tuple(int(d) for d in rng.integers(1, 7, ndim))


def assert_view_matches(view, name, original, dtype_name):
    assert view.name == name
    assert view.dtype == dtype_name
    assert view.shape == original.shape
    assert view.nbytes == original.nbytes
    arr = np.asarray(view)
    assert arr.dtype == original.dtype
    assert arr.shape == original.shape
    assert not arr.flags.writeable
    assert arr.tobytes() == original.tobytes(), name  # bit for bit, NaN included
    deq = view.dequantize()
    assert deq.dtype == np.float32 and deq.shape == original.shape
    assert deq.tobytes() == original.astype(np.float32).tobytes(), name


# ---------------------------------------------------------------- valid files


def test_every_supported_dtype_reads_bit_for_bit_with_metadata(tmp_path, rng):
    originals = {}
    for st_name, (_, np_dtype) in DTYPES.items():
        for k in range(3):
            originals[f"model.layers.{k}.{st_name.lower()}.weight"] = random_array(rng, np_dtype, random_shape(rng))
    originals["empty.f32"] = np.zeros((0, 5), np.float32)
    metadata = {"format": "pt", "note": "h\u00e9llo \u20ac \U0001F600", "empty": ""}
    path = tmp_path / "model.safetensors"
    save_file(originals, str(path), metadata=metadata)

    with torchless.load(path) as f:
        assert f.format == "safetensors"
        assert f.metadata == metadata
        assert sorted(f.tensors) == sorted(originals)
        for name, original in originals.items():
            st_name = name.split(".")[-2].upper() if name != "empty.f32" else "F32"
            assert_view_matches(f.tensors[name], name, original, DTYPES[st_name][0])


def test_views_are_zero_copy_and_outlive_close(tmp_path, rng):
    a = random_array(rng, np.float32, (16, 8))
    path = tmp_path / "a.safetensors"
    save_file({"a": a}, str(path))
    f = torchless.load(path)
    arr = np.asarray(f.tensors["a"])
    assert not arr.flags.owndata  # a view of the mapped file
    with pytest.raises(ValueError):
        arr[0, 0] = 1.0
    f.close()
    assert f.closed
    assert arr.tobytes() == a.tobytes()


def write_raw(path, header, data: bytes, header_len=None, pad=True):
    """A safetensors file written by hand: u64 length, JSON header (space-padded to 8
    bytes, as the reference writer does), data."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    n = len(h) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + h + data)
    return path


def test_bf16_written_by_hand_exports_uint16_and_dequantizes_exactly(tmp_path, rng):
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation is a valid BF16 value
    bits.reshape(-1)[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x0001]  # 0, -0, inf, -inf, nan, denormal
    w = rng.standard_normal(10).astype(np.float32)
    header = {
        "__metadata__": {"format": "pt"},
        "w.bf16": {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [0, bits.nbytes]},
        "v.f32": {"dtype": "F32", "shape": [10], "data_offsets": [bits.nbytes + 2, bits.nbytes + 42]},
    }
    # a 2-byte hole between the tensors: tolerated (the format forbids holes; we only forbid overlap)
    path = write_raw(tmp_path / "bf16.safetensors", header, bits.tobytes() + b"\0\0" + w.tobytes())
    with torchless.load(path) as f:
        v = f.tensors["w.bf16"]
        assert v.dtype == "bf16" and v.shape == (3, 5, 7) and v.nbytes == bits.nbytes
        arr = np.asarray(v)
        assert arr.dtype == np.uint16 and np.array_equal(arr, bits)
        expected = (bits.astype(np.uint32) << 16).view(np.float32)
        assert v.dequantize().tobytes() == expected.tobytes()
        assert np.asarray(f.tensors["v.f32"]).tobytes() == w.tobytes()  # unaligned data is fine for NumPy


def test_scalar_tensor_reads_as_shape_one(tmp_path):
    path = tmp_path / "s.safetensors"
    save_file({"scale": np.array(2.5, np.float32)}, str(path))
    with torchless.load(path) as f:
        v = f.tensors["scale"]
        assert v.shape == (1,)  # tl_tensor has no 0-dim form: a scalar is one element
        assert np.asarray(v).tolist() == [2.5]


def write_shards(folder, rng, n_shards=3, per_shard=4):
    originals, weight_map = {}, {}
    dtypes = list(DTYPES.items())
    for s in range(n_shards):
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        shard = {}
        for k in range(per_shard):
            st_name, (_, np_dtype) = dtypes[(s * per_shard + k) % len(dtypes)]
            tname = f"layers.{s}.{k}.{st_name.lower()}"
            shard[tname] = random_array(rng, np_dtype, random_shape(rng))
            weight_map[tname] = name
        save_file(shard, str(folder / name), metadata={"format": "pt", "shard": str(s)})
        originals.update(shard)
    total = sum(a.nbytes for a in originals.values())
    index = {"metadata": {"total_size": total, "note": "x", "ratio": 0.5, "skipped": [1, 2]}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return originals, total


@pytest.mark.parametrize("open_by", ["index", "folder"])
def test_sharded_index_merges_every_shard(tmp_path, rng, open_by):
    originals, total = write_shards(tmp_path, rng)
    target = tmp_path / "model.safetensors.index.json" if open_by == "index" else tmp_path
    with torchless.load(target) as f:
        assert f.format == "safetensors"
        # index metadata (numbers and strings), then the first shard's __metadata__
        assert f.metadata == {"total_size": total, "note": "x", "ratio": 0.5, "format": "pt", "shard": "0"}
        assert sorted(f.tensors) == sorted(originals)
        for name, original in originals.items():
            st_name = name.split(".")[-1].upper()
            assert_view_matches(f.tensors[name], name, original, DTYPES[st_name][0])


def test_folder_with_single_model_file(tmp_path, rng):
    a = random_array(rng, np.float16, (4, 4))
    save_file({"a": a}, str(tmp_path / "model.safetensors"))
    with torchless.load(tmp_path) as f:
        assert np.asarray(f.tensors["a"]).tobytes() == a.tobytes()


# ---------------------------------------------------------------- broken single files

F32_4x8 = {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]}
ZEROS_128 = bytes(128)


def bad(header, data=ZEROS_128, **kw):
    return lambda path: write_raw(path, header, data, **kw)


BROKEN = {
    "header length past EOF": (bad({"a": F32_4x8}, header_len=10_000), r"header length 10000 extends past the end of the file"),
    "header length huge": (bad({"a": F32_4x8}, header_len=2**64 - 1), r"extends past the end of the file"),
    "shorter than 8 bytes": (lambda p: p.write_bytes(b"\x10\0\0"), r"too short for a safetensors header"),
    "empty file": (lambda p: p.write_bytes(b""), r"file is 0 bytes"),
    "header not JSON": (bad(b"{\"a\": {\"dtype\": \"F32\",", pad=False), r"header: line 1, column \d+: unexpected end of input"),
    "header padded with NULs": (bad(b"{}\0\0\0\0\0\0", pad=False), r"unexpected byte 0x00 after the JSON value"),
    "header invalid UTF-8": (bad(b'{"a\xff": 1}', pad=False), r"invalid UTF-8 byte 0xff"),
    "header is an array": (bad([{"a": F32_4x8}]), r"header is an array, expected a JSON object"),
    "header is a string": (bad("a"), r"header is a string, expected a JSON object"),
    "offsets lie about size": (bad({"a": {**F32_4x8, "data_offsets": [0, 96]}}),
                               r"tensor 'a' data_offsets \[0, 96\] do not match shape \[4, 8\] of F32 \(128 bytes\)"),
    "shape lies about size": (bad({"a": {**F32_4x8, "shape": [4, 9]}}), r"do not match shape \[4, 9\] of F32 \(144 bytes\)"),
    "offsets reversed": (bad({"a": {**F32_4x8, "data_offsets": [128, 0]}}), r"data_offsets \[128, 0\] end before they begin"),
    "offsets past the data": (bad({"a": {**F32_4x8, "data_offsets": [64, 192]}}), r"extend past the end of the data"),
    "truncated data": (bad({"a": F32_4x8}, data=bytes(100)), r"data_offsets \[0, 128\] extend past the end of the data \(100 bytes"),
    "overlapping tensors": (bad({"a": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]},
                                 "b": {"dtype": "F32", "shape": [16], "data_offsets": [32, 96]}}),
                            r"tensors 'a' data_offsets \[0, 64\] and 'b' \[32, 96\] overlap"),
    "same bytes twice": (bad({"a": F32_4x8, "b": F32_4x8}), r"overlap"),
    "unknown dtype": (bad({"a": {**F32_4x8, "dtype": "F31"}}), r"tensor 'a' has unknown dtype 'F31'"),
    "unsupported dtype U16": (bad({"a": {"dtype": "U16", "shape": [64], "data_offsets": [0, 128]}}),
                              r"tensor 'a' has dtype U16, which torchless does not support"),
    "unsupported dtype F8": (bad({"a": {"dtype": "F8_E4M3", "shape": [128], "data_offsets": [0, 128]}}),
                             r"dtype F8_E4M3, which torchless does not support"),
    "dtype not a string": (bad({"a": {**F32_4x8, "dtype": 4}}), r"tensor 'a' dtype is a number, expected a string"),
    "five dimensions": (bad({"a": {"dtype": "F32", "shape": [2, 2, 2, 2, 2], "data_offsets": [0, 128]}}),
                        r"tensor 'a' has 5 dimensions; torchless supports at most 4"),
    "negative dimension": (bad({"a": {**F32_4x8, "shape": [4, -8]}}), r"shape dimension 1 is -8, expected a non-negative integer"),
    "fractional dimension": (bad({"a": {**F32_4x8, "shape": [4, 8.0]}}), r"shape dimension 1 is 8.0"),
    "shape not an array": (bad({"a": {**F32_4x8, "shape": "4x8"}}), r"shape is a string, expected an array"),
    "element count overflows": (bad({"a": {**F32_4x8, "shape": [2**40, 2**40]}}), r"shape has too many elements"),
    "byte count overflows": (bad({"a": {**F32_4x8, "shape": [2**62]}}), r"too large in bytes"),
    "offsets not integers": (bad({"a": {**F32_4x8, "data_offsets": [0, 128.0]}}), r"data_offsets must be an array of two non-negative integers"),
    "three offsets": (bad({"a": {**F32_4x8, "data_offsets": [0, 64, 128]}}), r"data_offsets must be an array of two"),
    "missing data_offsets": (bad({"a": {"dtype": "F32", "shape": [4, 8]}}), r"tensor 'a' has no 'data_offsets'"),
    "unexpected key": (bad({"a": {**F32_4x8, "offsets": [0, 128]}}), r"tensor 'a' has an unexpected key 'offsets'"),
    "entry not an object": (bad({"a": [0, 128]}), r"tensor 'a' entry is an array, expected an object"),
    "duplicate tensor name": (bad(b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
                                  b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'),
                              r"duplicate object key 'a'"),
    "metadata not strings": (bad({"__metadata__": {"total": 5}, "a": F32_4x8}),
                             r"__metadata__ value of 'total' is a number, expected a string"),
    "metadata not an object": (bad({"__metadata__": ["pt"], "a": F32_4x8}), r"__metadata__ is an array"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_raises_value_error_naming_the_problem(tmp_path, case):
    write, pattern = BROKEN[case]
    path = tmp_path / "broken.safetensors"
    write(path)
    with pytest.raises(ValueError, match=pattern) as e:
        torchless.load(path)
    assert str(path) in str(e.value)


def test_header_over_100_mb_is_rejected(tmp_path):
    path = tmp_path / "big.safetensors"
    n = 100_000_001
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", n) + b"{")
        fh.truncate(8 + n + 8)  # sparse: no disk space used
    with pytest.raises(ValueError, match=r"header length 100000001 is over the 100000000-byte limit"):
        torchless.load(path)


def test_truncated_real_file_raises(tmp_path, rng):
    path = tmp_path / "model.safetensors"
    save_file({"a": random_array(rng, np.float32, (64, 64)), "b": random_array(rng, np.int8, (10,))}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match=r"extend past the end of the data .*truncated"):
        torchless.load(path)


# ---------------------------------------------------------------- broken indexes


def test_index_tensor_missing_from_its_shard(tmp_path, rng):
    write_shards(tmp_path, rng, n_shards=2)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"tensor 'ghost.weight' is not in its shard 'model-00002-of-00002.safetensors'"):
        torchless.load(tmp_path / "model.safetensors.index.json")


def test_index_tensor_in_two_shards(tmp_path, rng):
    write_shards(tmp_path, rng, n_shards=2)
    save_file({"layers.0.0.f64": np.ones(3), "other": np.ones(2)}, str(tmp_path / "extra.safetensors"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["layers.0.0.f64"] = "model-00001-of-00002.safetensors"
    index["weight_map"]["other"] = "extra.safetensors"  # brings extra.safetensors in
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"tensor 'layers.0.0.f64' is in two shards"):
        torchless.load(tmp_path / "model.safetensors.index.json")


@pytest.mark.parametrize("shard", ["../model.safetensors", "sub/model.safetensors", "..", "", "a\u0000b"])
def test_index_shard_names_stay_in_the_folder(tmp_path, shard):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(ValueError, match=r"not a plain file name in the index's folder"):
        torchless.load(tmp_path / "model.safetensors.index.json")


def test_index_missing_shard_file_raises_file_not_found(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"shard 'gone.safetensors'"):
        torchless.load(tmp_path / "model.safetensors.index.json")


@pytest.mark.parametrize(
    "index, pattern",
    [
        ({"metadata": {}}, r"index has no 'weight_map'"),
        ({"weight_map": ["a"]}, r"'weight_map' is an array, expected an object"),
        ({"weight_map": {"a": 1}}, r"weight_map entry 'a' is a number, expected a file name"),
        ({"weight_map": {}, "metadata": "x"}, r"'metadata' is a string, expected an object"),
        ([], r"index is an array, expected a JSON object"),
    ],
)
def test_index_with_bad_structure(tmp_path, index, pattern):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=pattern):
        torchless.load(tmp_path / "model.safetensors.index.json")


def test_index_with_corrupt_shard_names_the_shard(tmp_path, rng):
    write_shards(tmp_path, rng, n_shards=2)
    shard = tmp_path / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"shard 'model-00002-of-00002.safetensors': .*extend past the end of the data"):
        torchless.load(tmp_path / "model.safetensors.index.json")


def test_index_invalid_json_gives_line_and_column(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text('{\n  "weight_map": {\n    "a": "x.safetensors",\n  }\n}')
    with pytest.raises(ValueError, match=r"line 4, column 3: unexpected '}', expected a string key"):
        torchless.load(tmp_path / "model.safetensors.index.json")
