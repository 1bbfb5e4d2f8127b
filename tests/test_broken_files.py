"""The file readers against hostile input: every file of the broken corpus
(tests/data/broken/, written by make_corpus.py) raises the error MANIFEST.tsv names,
the engine still loads a good file afterwards, and seeded random mutations of valid
GGUF and safetensors files either load (and every tensor can then be read) or raise
ValueError: never a crash, never another exception."""

import importlib.util
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

import torchless
from conftest import BROKEN

STATUS_EXCEPTION = {"format error": ValueError, "unsupported": ValueError, "not found": FileNotFoundError}


def manifest_rows():
    rows = []
    for line in (BROKEN / "MANIFEST.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            file, phrase, status = line.split("\t")
            rows.append((file, phrase, status))
    return rows


ROWS = manifest_rows()


def make_corpus_module():
    spec = importlib.util.spec_from_file_location("make_corpus", BROKEN / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the corpus

@pytest.mark.parametrize("file,phrase,status", ROWS, ids=[r[0] for r in ROWS])
def test_broken_file_raises_its_error_naming_the_file(file, phrase, status):
    path = str(BROKEN / file)
    with pytest.raises(Exception) as info:
        torchless.load(path)
    assert type(info.value) is STATUS_EXCEPTION[status], f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert phrase in message
    assert path in message


def test_good_file_loads_after_the_broken_ones(fixtures):
    for file, _, _ in ROWS:  # again, in case the parametrized test ran alone or in another order
        with pytest.raises((ValueError, FileNotFoundError)):
            torchless.load(str(BROKEN / file))
    f = torchless.load(fixtures / "stories260K" / "stories260K.derived-f32.gguf")
    assert f.architecture == "llama"
    assert len(f.tensors) > 0
    for name in f.tensors:
        assert np.isfinite(np.asarray(f.tensors[name]).sum())


def test_corpus_has_every_file_in_the_manifest_and_no_other():
    assert len(ROWS) >= 25
    listed = {file for file, _, _ in ROWS}
    assert len(listed) == len(ROWS), "a file is listed twice"
    for file in listed:
        assert (BROKEN / file).is_file(), f"{file} is in MANIFEST.tsv but not in the folder"
    # besides the listed files: the generator, the manifest, and the good shards an index names
    expected = set(listed) | {"make_corpus.py", "MANIFEST.tsv"}
    for file in listed:
        if file.endswith(".index.json"):
            folder = (BROKEN / file).parent
            expected |= {str(p.relative_to(BROKEN)) for p in folder.iterdir() if p.suffix == ".safetensors"}
    present = {str(p.relative_to(BROKEN)) for p in BROKEN.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert present == expected


def test_corpus_files_are_what_make_corpus_writes():
    """The committed files and the generator have not drifted apart."""
    mc = make_corpus_module()
    for name, content, phrase, status in mc.CASES:
        files = content if isinstance(content, dict) else {"": content}
        for file, data in files.items():
            path = BROKEN / name / file if file else BROKEN / name
            assert path.read_bytes() == data, f"{path} differs from make_corpus.py: rerun it"
        assert (mc.manifest_path(name, content), phrase, status) in ROWS


# ---------------------------------------------------------------- random mutations

MUTANTS = 1000
INTERESTING_U64 = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 2**31 - 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One seeded corruption: bit flips, a byte or a u64 overwritten with a boundary value,
    truncation, or bytes inserted or removed."""
    b = bytearray(data)
    op = int(rng.integers(7))
    at = int(rng.integers(len(b)))
    if op == 0:  # flip 1-4 bits
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
    elif op == 1:  # a random byte
        b[at] = int(rng.integers(256))
    elif op == 2:  # a boundary byte
        b[at] = int(rng.choice([0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF]))
    elif op == 3:  # a boundary u64 (counts, lengths, offsets and dims are u64 in GGUF)
        v = int(rng.choice(INTERESTING_U64)) + int(rng.integers(-2, 3))
        b[at : at + 8] = struct.pack("<Q", v % 2**64)
    elif op == 4:  # truncate
        del b[at:]
    elif op == 5:  # insert bytes
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    else:  # remove bytes
        del b[at : at + int(rng.integers(1, 9))]
    return bytes(b)


def use_everything(f) -> None:
    """Reads what a loaded file offers: metadata, and every tensor's bytes and values."""
    f.metadata, f.metadata_types
    with np.errstate(all="ignore"):
        for name in f.tensors:
            v = f.tensors[name]
            v.shape, v.ne, v.size, v.nbytes, v.offset
            try:
                np.asarray(v).sum()
            except ValueError:  # a shape NumPy cannot make (more than its maximum size of elements)
                pass
            try:
                v.dequantize().sum()
            except ValueError:  # a dtype without a float32 conversion
                pass


def check_mutants(tmp_path, original: bytes, suffix: str, rng) -> dict:
    outcomes = {"loaded": 0, "ValueError": 0}
    for i in range(MUTANTS):
        data = mutate(original, rng)
        path = tmp_path / f"mutant-{i}{suffix}"
        path.write_bytes(data)
        try:
            f = torchless.load(path)
        except ValueError as e:
            assert str(path) in str(e), f"mutant {i}: message does not name the file: {e}"
            outcomes["ValueError"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutant {i} ({path}) raised {type(e).__name__}: {e}")
        use_everything(f)
        f.close()
        outcomes["loaded"] += 1
    print(outcomes)
    return outcomes


def small_gguf(path, rng) -> bytes:
    w = rng.standard_normal((2, 64)).astype(np.float32)
    torchless.gguf.write(
        path,
        {"general.architecture": "llama", "llama.block_count": torchless.gguf.Value(1, "uint32"),
         "general.alignment": torchless.gguf.Value(16, "uint32"), "flag": True, "pi": 3.25,
         "tokenizer.ggml.tokens": ["<s>", "a", "bc"], "tokenizer.ggml.scores": [0.0, -1.5, -2.5],
         "nested": torchless.gguf.Value([[1, 2], [3]], "array[array[int32]]")},
        {"f32": w[:, :8], "f16": w[:1, :16].astype(np.float16),
         "q4_0": ("q4_0", torchless.quantize(w[:, :32], "q4_0"), (2, 32)),
         "q8_0": ("q8_0", torchless.quantize(w[:1, :32], "q8_0"), (1, 32)),
         "i32": np.arange(6, dtype=np.int32).reshape(2, 3)},
    )
    return path.read_bytes()


def small_safetensors(path, rng) -> bytes:
    save_file({"w": rng.standard_normal((3, 4)).astype(np.float32),
               "h": rng.standard_normal(5).astype(np.float16),
               "ids": np.arange(4, dtype=np.int64), "mask": np.array([True, False]),
               "u": np.arange(3, dtype=np.uint8)}, str(path), metadata={"format": "pt"})
    return path.read_bytes()


def test_random_gguf_mutants_load_or_raise_value_error(tmp_path, rng):
    original = small_gguf(tmp_path / "original.gguf", rng)
    assert len(torchless.load(tmp_path / "original.gguf").tensors) == 5
    outcomes = check_mutants(tmp_path, original, ".gguf", rng)
    assert outcomes["ValueError"] > 0 and outcomes["loaded"] > 0


def test_random_safetensors_mutants_load_or_raise_value_error(tmp_path, rng):
    original = small_safetensors(tmp_path / "original.safetensors", rng)
    assert len(torchless.load(tmp_path / "original.safetensors").tensors) == 5
    outcomes = check_mutants(tmp_path, original, ".safetensors", rng)
    assert outcomes["ValueError"] > 0 and outcomes["loaded"] > 0
