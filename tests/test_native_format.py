"""The torchless native format (.tl, docs/format.md) and the streaming writers: a .tl made from
the stories260K GGUF twin prints the known story; GGUF -> .tl -> GGUF gives the same file byte
for byte (and the `gguf` package reads the same values we do); every dtype's blocks come back
as written; the streamed writer writes exactly what the one-shot writer writes; a failing
source leaves no file behind; seeded corruptions load or raise ValueError."""

import math
import os

import gguf as gguf_pkg
import numpy as np
import pytest

import torchless
from torchless import Llama, Model, Transformer
from torchless.gguf import Value, write, write_model

from test_broken_files import check_mutants


def copy(src, dst, format=None, streamed=True):
    """src's metadata (with its value types) and tensors written to dst."""
    f = torchless.load(src)
    names = list(f.tensors)
    infos = [(n, f.tensors[n].dtype, f.tensors[n].shape) for n in names]
    if streamed:
        write_model(dst, f.metadata, infos, lambda i: f.tensors[names[i]], types=f.metadata_types, format=format,
                    version=f.version if f.format == "gguf" else 3)
    else:
        write(dst, f.metadata, {n: f.tensors[n] for n in names}, types=f.metadata_types, format=format)
    return f


@pytest.fixture(scope="module")
def stories_dir(fixtures):
    return fixtures / "stories260K"


@pytest.fixture(scope="module")
def expected(stories_dir):
    return (stories_dir / "stories260K.expected_stdout.txt").read_text()


@pytest.fixture(scope="module")
def stories_tl(stories_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("tl") / "stories260K.tl"
    copy(stories_dir / "stories260K.derived-f32.gguf", path)
    return path


# ---------------------------------------------------------------- a real model


def test_stories260k_tl_prints_the_known_story(stories_tl, expected):
    f = torchless.load(stories_tl)
    assert f.format == "tl" and f.version == 1 and f.alignment == 64
    assert Model(stories_tl).generate([1], max_new_tokens=200, temperature=0) == expected
    t = Transformer.from_pretrained(stories_tl)
    assert t.params.n_layers == 5 and t.params.vocab_size == 512
    llm = Llama.build(stories_tl, max_seq_len=256, max_batch_size=1, verbose=False)
    toks, _ = llm.generate([[1]], max_gen_len=200, temperature=0)
    assert llm.tokenizer.decode(toks[0]) == expected


def test_tl_tensors_are_views_of_the_file_at_64_byte_offsets(stories_tl, stories_dir):
    f = torchless.load(stories_tl)
    twin = torchless.load(stories_dir / "stories260K.derived-f32.gguf")
    raw = stories_tl.read_bytes()
    assert raw[:8] == b"TLESS\0\0\0"
    assert list(f.tensors) == list(twin.tensors)
    for name in f.tensors:
        v = f.tensors[name]
        assert v.offset % 64 == 0
        assert raw[v.offset:v.offset + v.nbytes] == bytes(np.asarray(twin.tensors[name]).data), name
        assert not np.asarray(v).flags.writeable


def test_gguf_to_tl_to_gguf_is_byte_identical(stories_tl, stories_dir, tmp_path):
    original = stories_dir / "stories260K.derived-f32.gguf"
    back = tmp_path / "back.gguf"
    copy(stories_tl, back, format="gguf")
    assert back.read_bytes() == original.read_bytes()


def test_the_gguf_package_reads_what_we_read_from_the_tl(stories_tl, stories_dir):
    ref = gguf_pkg.GGUFReader(str(stories_dir / "stories260K.derived-f32.gguf"))
    ours = torchless.load(stories_tl)
    md, types = ours.metadata, ours.metadata_types
    for name, field in ref.fields.items():
        if name.startswith("GGUF."):
            continue
        value = md[name]
        kind = field.types[0]
        if kind == gguf_pkg.GGUFValueType.STRING:
            assert value == bytes(field.parts[-1]).decode(), name
        elif kind == gguf_pkg.GGUFValueType.ARRAY:
            elem = field.types[1]
            items = [field.parts[i] for i in field.data]
            if elem == gguf_pkg.GGUFValueType.STRING:
                assert list(value) == [bytes(x).decode() for x in items], name
            else:
                assert np.array_equal(np.asarray(value), np.concatenate(items)), name
            assert types[name] == f"array[{elem.name.lower()}]"
        else:
            assert value == field.parts[-1][0], name
            assert types[name] == kind.name.lower()
    for t in ref.tensors:
        v = ours.tensors[t.name]
        assert v.shape == tuple(reversed([int(x) for x in t.shape])) and v.dtype == t.tensor_type.name.lower()
        assert np.array_equal(np.asarray(v).ravel(), np.asarray(t.data).ravel()), t.name


# ---------------------------------------------------------------- every dtype, every value type


def random_tensor(dtype, rng):
    """(shape in NumPy order, raw bytes) of a random tensor of dtype, 3 rows of 2 blocks."""
    info = torchless.dtype_info(dtype)
    cols = info["block_size"] * 2
    shape = (3, cols)
    if info["quantized"]:
        try:
            raw = torchless.quantize(rng.standard_normal(shape).astype(np.float32), dtype)
            return shape, np.ascontiguousarray(raw)
        except ValueError:  # no quantizer (e.g. q8_1): random blocks are still valid bytes
            pass
    n = 3 * 2 * info["type_size"]
    return shape, rng.integers(0, 256, n, dtype=np.uint8) if dtype != "bool" else rng.integers(0, 2, n, dtype=np.uint8)


def test_every_dtype_round_trips_through_tl_and_gguf(tmp_path, rng):
    dtypes = torchless.dtypes()
    tensors = {f"t.{d}": (d, *reversed(random_tensor(d, rng))) for d in dtypes}
    tensors = {k: (d, raw, shape) for k, (d, raw, shape) in tensors.items()}
    path = tmp_path / "all.tl"
    write(path, {"general.architecture": "llama"}, tensors)
    f = torchless.load(path)
    assert f.format == "tl"
    for name, (d, raw, shape) in tensors.items():
        v = f.tensors[name]
        assert v.dtype == d and v.shape == shape and bytes(np.asarray(v).data) == raw.tobytes(), name
    # the GGML types also through GGUF, and back to .tl: the same bytes
    ggml = {k: t for k, t in tensors.items() if torchless.dtype_info(t[0])["id"] < 64}
    assert len(ggml) >= 15
    write(tmp_path / "ggml.tl", {"a": 1}, ggml)
    copy(tmp_path / "ggml.tl", tmp_path / "ggml.gguf")
    copy(tmp_path / "ggml.gguf", tmp_path / "again.tl")
    assert (tmp_path / "again.tl").read_bytes() == (tmp_path / "ggml.tl").read_bytes()
    with pytest.raises(ValueError, match="cannot be stored in GGUF"):
        write(tmp_path / "u8.gguf", {}, {"u": ("u8", np.zeros(4, np.uint8), (4,))})
    assert not (tmp_path / "u8.gguf").exists()


EDGE_METADATA = {
    "general.architecture": "llama",
    "u8": Value(255, "uint8"), "i8": Value(-128, "int8"), "u16": Value(65535, "uint16"), "i16": Value(-32768, "int16"),
    "u32": Value(2**32 - 1, "uint32"), "i32": Value(-(2**31), "int32"),
    "u64": Value(2**64 - 1, "uint64"), "i64": Value(-(2**63), "int64"),
    "f32.tiny": Value(1e-45, "float32"), "f32.third": Value(1 / 3, "float32"), "f32.neg0": Value(-0.0, "float32"),
    "f32.nan": Value(math.nan, "float32"), "f32.inf": Value(math.inf, "float32"), "f32.ninf": Value(-math.inf, "float32"),
    "f64.third": Value(1 / 3, "float64"), "f64.max": Value(1.7976931348623157e308, "float64"),
    "f64.nan": Value(math.nan, "float64"),
    "b.t": True, "b.f": False,
    "s.empty": "", "s.quotes": 'a "b" \\ c\n\t\x01\x7f é 中 😀', "s.nul": "a\0b",
    "s.not-utf8": b"\xff\xfe<0x80>".decode("utf-8", "surrogateescape"),
    "a.empty": Value([], "array[int32]"), "a.u64": Value([0, 2**64 - 1], "array[uint64]"),
    "a.f32": Value([0.1, -0.0, math.inf, math.nan], "array[float32]"), "a.bool": Value([True, False, True], "array[bool]"),
    "a.str": ["", "x", "\0", b"\x80".decode("utf-8", "surrogateescape")],
    "a.nested": Value([[1, 2], [], [3]], "array[array[int32]]"),
    "a.nested2": Value([[["a"]], []], "array[array[array[string]]]"),
}


def same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, np.ndarray):
        return a.dtype == np.asarray(b).dtype and a.tobytes() == np.asarray(b).tobytes()
    if isinstance(a, (list, tuple)) or type(a).__name__ == "StringArray":
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


def test_metadata_of_every_type_and_awkward_value_round_trips(tmp_path, rng):
    w = rng.standard_normal((2, 32)).astype(np.float32)
    tensors = {"w": w, "q": ("q8_0", torchless.quantize(w, "q8_0"), (2, 32))}
    write(tmp_path / "a.gguf", EDGE_METADATA, tensors)
    write(tmp_path / "a.tl", EDGE_METADATA, tensors)
    g, t = torchless.load(tmp_path / "a.gguf"), torchless.load(tmp_path / "a.tl")
    assert list(t.metadata) == list(g.metadata)
    assert t.metadata_types == g.metadata_types
    for key in g.metadata:
        assert same(g.metadata[key], t.metadata[key]), (key, g.metadata[key], t.metadata[key])
    # the .tl written from the GGUF's values is the .tl written directly, and back again
    copy(tmp_path / "a.gguf", tmp_path / "b.tl")
    assert (tmp_path / "b.tl").read_bytes() == (tmp_path / "a.tl").read_bytes()
    copy(tmp_path / "b.tl", tmp_path / "b.gguf")
    assert (tmp_path / "b.gguf").read_bytes() == (tmp_path / "a.gguf").read_bytes()


def test_tl_header_is_readable_json(tmp_path):
    import json
    import struct

    write(tmp_path / "x.tl", {"general.architecture": "llama", "n": Value(5, "uint32"), "f": Value(math.nan, "float32")},
          {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    raw = (tmp_path / "x.tl").read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 12)
    header = json.loads(raw[20:20 + n])
    assert header["metadata"]["n"] == {"type": "uint32", "value": 5}
    assert header["metadata"]["f"] == {"type": "float32", "value": "nan"}
    assert header["tensors"]["w"] == {"dtype": "f32", "shape": [2, 3], "offset": 0, "nbytes": 24}
    start = (20 + n + 63) // 64 * 64
    assert np.array_equal(np.frombuffer(raw, np.float32, 6, start), np.arange(6))


# ---------------------------------------------------------------- the streaming writer


@pytest.mark.parametrize("format", ["gguf", "tl"])
def test_streamed_file_equals_the_one_shot_file(tmp_path, rng, format):
    tensors = {}
    for i, dtype in enumerate(["f32", "f16", "q4_0", "q4_k", "q6_k", "bf16", "q8_0"]):
        rows, cols = int(rng.integers(1, 5)), torchless.dtype_info(dtype)["block_size"] * int(rng.integers(1, 3))
        if dtype == "f32":
            cols = int(rng.integers(1, 40))
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        tensors[f"blk.{i}.{dtype}"] = (dtype, torchless.quantize(x, dtype), (rows, cols))
    tensors["empty"] = ("f32", np.zeros((0, 4), np.float32), (0, 4))
    md = {"general.architecture": "llama", "general.alignment": Value(64, "uint32"), "x": [1.5, 2.5]}
    one, two = tmp_path / f"one.{format}", tmp_path / f"two.{format}"
    write(one, md, tensors, format=format)
    names = list(tensors)
    calls = []

    def fill(i):
        calls.append(i)
        return tensors[names[i]][1]

    write_model(two, md, [(n, tensors[n][0], tensors[n][2]) for n in names], fill, format=format)
    assert calls == list(range(len(names)))  # once each, in order
    assert one.read_bytes() == two.read_bytes()
    assert torchless.load(two).format == format
    # a non-contiguous array is written in row-major order
    x = rng.standard_normal((5, 3)).astype(np.float32)
    write_model(two, {}, [("t", "f32", (3, 5))], lambda i: x.T, format=format)
    assert np.array_equal(np.asarray(torchless.load(two).tensors["t"]), x.T)


@pytest.mark.parametrize("format", ["gguf", "tl"])
def test_a_failing_source_leaves_no_file(tmp_path, format):
    infos = [("a", "f32", (2, 3)), ("b", "f32", (4,))]
    path = tmp_path / f"x.{format}"

    def raises(i):
        if i == 1:
            raise RuntimeError("source went away")
        return np.zeros((2, 3), np.float32)

    with pytest.raises(RuntimeError, match="source went away"):
        write_model(path, {}, infos, raises, format=format)
    assert not path.exists()
    with pytest.raises(ValueError, match="gave 12 bytes for tensor 'a'; its dtype and shape need 24"):
        write_model(path, {}, infos, lambda i: np.zeros(3, np.float32), format=format)
    assert not path.exists()
    with pytest.raises(ValueError, match="not a whole number"):  # checked before the file is created
        write_model(path, {}, [("q", "q4_0", (1, 33))], lambda i: b"", format=format)
    with pytest.raises(ValueError, match="duplicate tensor name"):
        write_model(path, {}, [("a", "f32", (1,)), ("a", "f32", (1,))], lambda i: b"\0" * 4, format=format)
    with pytest.raises(TypeError):
        write_model(path, {}, infos, None, format=format)
    assert not path.exists()


def test_tl_refuses_what_json_cannot_name(tmp_path):
    bad_key = b"\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError, match="is not UTF-8"):
        write(tmp_path / "k.tl", {bad_key: 1})
    assert not (tmp_path / "k.tl").exists()
    write(tmp_path / "k.gguf", {bad_key: 1})  # GGUF keys are bytes
    assert bad_key in torchless.load(tmp_path / "k.gguf").metadata


# ---------------------------------------------------------------- recognition and hostile input


def test_tl_is_recognised_by_content_whatever_its_name(stories_tl, tmp_path):
    other = tmp_path / "model.bin"
    other.write_bytes(stories_tl.read_bytes())
    assert torchless.load(other).format == "tl"


def small_tl(path, rng) -> bytes:
    w = rng.standard_normal((2, 64)).astype(np.float32)
    write(path, {"general.architecture": "llama", "llama.block_count": Value(1, "uint32"), "flag": True,
                 "pi": 3.25, "tokenizer.ggml.tokens": ["<s>", "a", "bc"], "nested": Value([[1, 2], [3]], "array[array[int32]]")},
          {"f32": w[:, :8], "f16": w[:1, :16].astype(np.float16), "q4_0": ("q4_0", torchless.quantize(w[:, :32], "q4_0"), (2, 32)),
           "i32": np.arange(6, dtype=np.int32).reshape(2, 3)})
    return path.read_bytes()


def test_random_tl_mutants_load_or_raise_value_error(tmp_path, rng):
    original = small_tl(tmp_path / "original.tl", rng)
    assert len(torchless.load(tmp_path / "original.tl").tensors) == 4
    outcomes = check_mutants(tmp_path, original, ".tl", rng)
    assert outcomes["ValueError"] > 0 and outcomes["loaded"] > 0


def test_random_llama2c_mutants_load_or_raise_value_error(tmp_path, rng, fixtures):
    import importlib.util

    from conftest import BROKEN

    spec = importlib.util.spec_from_file_location("make_corpus", BROKEN / "make_corpus.py")
    mc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mc)
    for original in (mc.l2c_v0(), mc.l2c_v1()):
        outcomes = check_mutants(tmp_path, original, ".bin", rng)
        assert outcomes["ValueError"] > 0 and outcomes["loaded"] > 0
