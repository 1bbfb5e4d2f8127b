"""GGUF reading and writing, checked against the `gguf` package (llama.cpp's own Python
reader and writer), on the shared fixtures, the packaged models and random files."""

import gc

import gguf
import numpy as np
import pytest

import torchless
from torchless.gguf import Value

VOCABS = ["ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"]


# ---------------------------------------------------------------- comparison with GGUFReader

def reader_type_name(field) -> str:
    names = [t.name.lower() for t in field.types]
    name = names[-1]
    for _ in names[:-1]:
        name = f"array[{name}]"
    return name


def flatten(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, torchless.StringArray)):
        out = []
        for v in value:
            out.extend(flatten(v)) if isinstance(v, (list, np.ndarray, torchless.StringArray)) else out.append(v)
        return out
    return value


def reader_value(field):
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        return field.contents()
    return field.contents()


def assert_same_as_reader(ours: torchless.ModelFile, path):
    r = gguf.GGUFReader(path)
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert ours.version == r.fields["GGUF.version"].contents()
    assert list(ours.metadata) == list(fields), "keys and their order"
    for key, field in fields.items():
        assert ours.metadata_types[key] == reader_type_name(field), key
        mine, theirs = flatten(ours.metadata[key]), reader_value(field)
        if field.types[-1] in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
            np.testing.assert_array_equal(np.asarray(mine, np.float64), np.asarray(theirs, np.float64), err_msg=key)
        else:
            assert mine == theirs, key
    assert list(ours.tensors) == [t.name for t in r.tensors]
    for t in r.tensors:
        v = ours.tensors[t.name]
        assert v.dtype == t.tensor_type.name.lower()
        assert v.ne == tuple(int(d) for d in t.shape)
        assert v.shape == tuple(int(d) for d in reversed(t.shape))
        assert v.nbytes == t.n_bytes
        assert v.offset == t.data_offset  # absolute file offset
        assert np.asarray(v).tobytes() == t.data.tobytes(), t.name


@pytest.mark.parametrize("name", VOCABS)
def test_vocab_only_fixtures_read_like_gguf_reader(fixtures, name):
    path = fixtures / "vocab" / name
    with torchless.load(path) as f:
        assert len(f.tensors) == 0
        assert f.metadata["tokenizer.ggml.model"] in ("gpt2", "llama")
        assert len(f.metadata["tokenizer.ggml.tokens"]) > 30000
        assert_same_as_reader(f, str(path))


def test_stories260k_fixture_reads_like_gguf_reader(fixtures):
    path = fixtures / "stories260K" / "stories260K.derived-f32.gguf"
    with torchless.load(path) as f:
        assert f.architecture == "llama"
        assert f.tensors["token_embd.weight"].shape == (512, 64)
        assert f.tensors["token_embd.weight"].dtype == "f32"
        assert_same_as_reader(f, str(path))


def test_packaged_smollm2_reads_like_gguf_reader(smollm2_path):
    with torchless.load(smollm2_path) as f:
        assert f.architecture == "llama"
        assert f.metadata["llama.context_length"] == 8192
        assert f.tensors["blk.0.attn_q.weight"].dtype == "q4_1"
        assert f.tensors["blk.0.attn_q.weight"].shape == (576, 576)
        assert_same_as_reader(f, smollm2_path)


def test_packaged_gemma3_reads_like_gguf_reader(gemma3_path):
    with torchless.load(gemma3_path) as f:
        assert f.architecture == "gemma3"
        assert len(f.metadata["tokenizer.ggml.tokens"]) == 262144
        assert_same_as_reader(f, gemma3_path)


def test_hub_names_load_like_paths(smollm2_path):
    with torchless.load("smollm2-135m-instruct") as f:
        assert f.path == smollm2_path
        assert len(f.tensors) == 272


# ---------------------------------------------------------------- writer round trips

def random_metadata(rng):
    """Every GGUF value type, arrays of each, arrays of arrays, odd strings."""
    ints = {"uint8": (0, 2**8), "int8": (-2**7, 2**7), "uint16": (0, 2**16), "int16": (-2**15, 2**15),
            "uint32": (0, 2**32), "int32": (-2**31, 2**31), "uint64": (0, 2**64), "int64": (-2**63, 2**63)}
    md = {"general.architecture": "llama", "general.alignment": Value(64, "uint32")}
    for name, (lo, hi) in ints.items():
        dt = np.dtype(gguf.GGUFReader.gguf_scalar_to_np[gguf.GGUFValueType[name.upper()]])
        md[f"test.{name}"] = Value(int(rng.integers(lo, hi, dtype=np.int64 if lo < 0 else np.uint64)), name)
        md[f"test.{name}.extremes"] = Value(np.array([lo, hi - 1], dtype=dt), f"array[{name}]")
        md[f"test.{name}.array"] = rng.integers(lo, hi, size=int(rng.integers(1, 50)), dtype=dt)
    md["test.float32"] = Value(float(np.float32(rng.standard_normal())), "float32")
    md["test.float64"] = Value(float(rng.standard_normal()), "float64")
    md["test.float32.array"] = rng.standard_normal(33).astype(np.float32)
    md["test.float64.array"] = rng.standard_normal(7)
    md["test.bool"] = True
    md["test.bool.array"] = [True, False, True]
    md["test.string"] = "héllo ▁wörld ✓ \n\t"
    md["test.empty_string"] = ""
    md["test.string.array"] = ["", "a", "▁the", "<0x0A>", "日本"] * 3
    md["test.nested"] = Value([[1, 2], [3, 4, 5], [6]], "array[array[int32]]")
    md["test.nested.strings"] = Value([["a"], ["b", "c"]], "array[array[string]]")
    return md


def random_tensors(rng):
    t = {}
    t["f32"] = rng.standard_normal((3, 5)).astype(np.float32)
    t["f16"] = rng.standard_normal((2, 3, 4)).astype(np.float16)
    t["vector"] = rng.standard_normal(17).astype(np.float32)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    for dtype in ("q4_0", "q8_0", "q4_k", "q6_k"):
        t[dtype] = (dtype, torchless.quantize(x, dtype), x.shape)
    bf16 = (rng.integers(0, 2**16, size=(2, 8), dtype=np.uint16) & 0x7F7F)
    t["bf16"] = ("bf16", bf16, bf16.shape)
    return t


def test_our_writer_is_read_identically_by_gguf_reader(tmp_path, rng):
    path = tmp_path / "ours.gguf"
    md, tensors = random_metadata(rng), random_tensors(rng)
    torchless.gguf.write(path, md, tensors)
    r = gguf.GGUFReader(path)
    assert r.alignment == 64
    with torchless.load(path) as f:
        assert f.alignment == 64
        assert_same_as_reader(f, path)
        for name, t in tensors.items():
            raw = np.asarray(t[1] if isinstance(t, tuple) else t)
            assert np.asarray(f.tensors[name]).tobytes() == raw.tobytes(), name
        for key, value in md.items():
            expect = value.value if isinstance(value, Value) else value
            assert flatten(f.metadata[key]) == flatten(expect), key


def test_gguf_writer_files_are_read_identically_by_us(tmp_path, rng):
    path = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("test.u32", 7)
    w.add_int64("test.i64", -(2**40))
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", False)
    w.add_string("test.str", "ünïcode")
    w.add_array("test.floats", [0.5, 1.5, -2.0])
    w.add_array("test.strings", ["x", "yy", ""])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_custom_alignment(128)
    arrays = {"a": rng.standard_normal((7, 3)).astype(np.float32),
              "b": rng.standard_normal((64,)).astype(np.float16)}
    for name, a in arrays.items():
        w.add_tensor(name, a)
    q = torchless.quantize(rng.standard_normal((2, 64)).astype(np.float32), "q8_0")
    w.add_tensor("q", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with torchless.load(path) as f:
        assert f.alignment == 128
        assert_same_as_reader(f, path)
        for name, a in arrays.items():
            np.testing.assert_array_equal(np.asarray(f.tensors[name]), a)
            assert np.asarray(f.tensors[name]).dtype == a.dtype
        assert f.tensors["q"].shape == (2, 64)
        assert np.asarray(f.tensors["q"]).tobytes() == q.tobytes()


def test_copying_a_real_model_keeps_every_byte_of_data(tmp_path, smollm2_path):
    out = tmp_path / "copy.gguf"
    with torchless.load(smollm2_path) as f:
        torchless.gguf.write(out, f.metadata, f.tensors, types=f.metadata_types)
        with torchless.load(out) as g:
            assert g.metadata_types == f.metadata_types
            assert list(g.tensors) == list(f.tensors)
            for name in f.tensors:
                assert np.asarray(g.tensors[name]).tobytes() == np.asarray(f.tensors[name]).tobytes()
    # same metadata, same order, same alignment: the whole file is the same
    assert out.read_bytes() == open(smollm2_path, "rb").read()


def test_writer_rejects_bad_input_without_leaving_a_file(tmp_path):
    path = tmp_path / "bad.gguf"
    with pytest.raises(ValueError, match="duplicate"):
        torchless._C.gguf_write(str(path), 3, [("a", 4, 1), ("a", 4, 2)], [])
    with pytest.raises(ValueError, match="bytes of data"):
        torchless.gguf.write(path, {}, {"t": ("q4_0", np.zeros(17, np.uint8), (1, 32))})
    with pytest.raises(ValueError, match="block"):
        torchless.gguf.write(path, {}, {"t": ("q4_0", np.zeros(18, np.uint8), (1, 33))})
    with pytest.raises(OverflowError):
        torchless.gguf.write(path, {"x": Value(300, "uint8")})
    with pytest.raises(ValueError, match="alignment"):
        torchless.gguf.write(path, {"general.alignment": Value(3, "uint32")})
    assert not path.exists()


# ---------------------------------------------------------------- zero-copy views

def test_views_point_into_the_mapped_file(smollm2_path):
    f = torchless.load(smollm2_path)
    names = ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "output_norm.weight"]
    views = [f.tensors[n] for n in names]
    arrays = [np.asarray(v) for v in views]
    addr = [a.__array_interface__["data"][0] for a in arrays]
    # the addresses differ exactly as the file offsets do: one mapping, nothing copied
    for v, a in zip(views[1:], addr[1:]):
        assert a - addr[0] == v.offset - views[0].offset
    raw = open(smollm2_path, "rb").read()
    for v, a in zip(views, arrays):
        assert a.tobytes() == raw[v.offset:v.offset + v.nbytes]
    assert np.shares_memory(np.asarray(views[0]), arrays[0])
    assert arrays[0].dtype == np.uint8 and arrays[0].shape == (576, 576 // 32 * 20)
    assert arrays[2].dtype == np.float32 and arrays[2].shape == (576,)
    f.close()


def test_views_outlive_the_file_object(smollm2_path):
    f = torchless.load(smollm2_path)
    v = f.tensors["blk.3.ffn_down.weight"]
    expect = v.dequantize()
    a = np.asarray(v)
    before = a.copy()
    f.close()
    del f
    gc.collect()
    np.testing.assert_array_equal(a, before)
    np.testing.assert_array_equal(v.dequantize(), expect)


def test_views_are_read_only(smollm2_path):
    with torchless.load(smollm2_path) as f:
        v = f.tensors["output_norm.weight"]
        a = np.asarray(v)
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = 1.0
        with pytest.raises(ValueError):
            a.setflags(write=True)
        m = memoryview(v)
        assert m.readonly and m.format == "f" and m.shape == (576,)
        with pytest.raises(TypeError):
            m[0] = 1.0


def test_plain_dtypes_export_their_buffer_formats(tmp_path, rng):
    path = tmp_path / "plain.gguf"
    bf16 = rng.integers(0, 2**15, size=(3, 4), dtype=np.uint16)
    torchless.gguf.write(path, {}, {"f32": rng.standard_normal((3, 4)).astype(np.float32),
                                    "f16": rng.standard_normal((3, 4)).astype(np.float16),
                                    "bf16": ("bf16", bf16, bf16.shape)})
    with torchless.load(path) as f:
        fmt = {n: memoryview(f.tensors[n]).format for n in f.tensors}
        assert fmt == {"f32": "f", "f16": "e", "bf16": "H"}
        assert np.asarray(f.tensors["bf16"]).dtype == np.uint16
        np.testing.assert_array_equal(np.asarray(f.tensors["bf16"]), bf16)
        expect = (bf16.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(f.tensors["bf16"].dequantize(), expect)


def test_closed_file_raises_but_views_stay(smollm2_path):
    f = torchless.load(smollm2_path)
    v = f.tensors["output_norm.weight"]
    f.close()
    assert f.closed
    with pytest.raises(ValueError, match="closed"):
        f._handle.metadata()
    assert v.dequantize().shape == (576,)


def test_tensors_at_odd_addresses_dequantize_correctly(tmp_path, rng):
    """general.alignment 1 puts data at odd offsets; results must not depend on it."""
    path = tmp_path / "packed.gguf"
    x = rng.standard_normal((3, 256)).astype(np.float32)
    tensors = {}
    for dtype in ("f16", "bf16", "q4_0", "q8_0", "q4_k", "q6_k", "q8_k", "tq2_0"):
        tensors[dtype] = (dtype, torchless.quantize(x, dtype), x.shape)
    md = {"general.alignment": Value(1, "uint32")}
    torchless.gguf.write(path, md, tensors)
    with torchless.load(path) as f:
        even = f.tensors["f16"].offset % 2 == 0
    if even:  # one byte in front puts every (even-sized) tensor after it at an odd address
        tensors = {"pad": np.ones(1, np.int8), **tensors}
        torchless.gguf.write(path, md, tensors)
    with torchless.load(path) as f:
        offsets = [f.tensors[n].offset for n in f.tensors]
        assert any(o % 2 for o in offsets), offsets
        for dtype in tensors:
            if dtype == "pad":
                continue
            expect = torchless.dequantize(tensors[dtype][1], dtype, x.shape)  # aligned NumPy memory
            np.testing.assert_array_equal(f.tensors[dtype].dequantize(), expect, err_msg=dtype)
