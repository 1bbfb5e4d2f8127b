"""Unicode NFC normalization before tokenizing (HF tokenizer.json's NFC normalizer, Qwen2),
checked against Python's `unicodedata.normalize("NFC", ...)`, an implementation we did not write.

A byte-level vocabulary of the 256 byte tokens and no merges makes the tokenizer's output the
normalized text's bytes, so decode(encode(s)) is exactly what the normalizer produced."""

import json
import random
import unicodedata
from pathlib import Path

import pytest

import torchless

CORPUS = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "tokenizer_corpus.json").read_text("utf-8"))


def byte_tokens():
    """GPT-2's byte -> printable character map (the byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def write_vocab(path, normalizer):
    md = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": byte_tokens(),
        "tokenizer.ggml.token_type": [1] * 256,
        "tokenizer.ggml.merges": [],
    }
    if normalizer is not None:
        md["torchless.tokenizer.normalizer"] = normalizer
    torchless.gguf.write(path, md, types={"tokenizer.ggml.tokens": "array[string]", "tokenizer.ggml.merges": "array[string]",
                                          "tokenizer.ggml.token_type": "array[int32]"})
    return torchless.Tokenizer(str(path))


@pytest.fixture
def nfc_tok(tmp_path):
    return write_vocab(tmp_path / "nfc.gguf", "nfc")


# Code points whose NFC behaviour is stable across Unicode 14 (Python 3.11) and 16 (our tables):
POOL = (
    "aeiouAEIOUnNcCsSzZ"                         # bases that take marks
    + "".join(chr(c) for c in range(0x300, 0x370))   # combining diacritics, several classes
    + "\u0591\u05B0\u05B4\u05BC\u0951\u093C\u0958"  # Hebrew points, Devanagari nukta, an excluded composite
    + "\u00C5\u212B\u2126\u00E9\u1E9B\u0344\u0F73"  # Å, Angstrom and Ohm singletons, ẛ, composite marks
    + "\u1100\u1112\u1161\u1175\u11A8\u11C2\uAC00\uD7A3\uAC01"  # Hangul jamo L/V/T and syllables
    + "\u0CC6\u0CC2\u0CD5\u09C7\u09BE\u09D7"      # Kannada/Bengali two-part vowels (starters that compose)
    + " \n!1"
)


def test_nfc_equals_python_unicodedata_on_random_mark_sequences(nfc_tok, seed):
    rnd = random.Random(seed)
    bad = []
    for _ in range(3000):
        s = "".join(rnd.choice(POOL) for _ in range(rnd.randint(1, 12)))
        got = nfc_tok.decode(nfc_tok.encode(s, add_bos=False))
        if got != unicodedata.normalize("NFC", s):
            bad.append(s)
    assert not bad, f"{len(bad)} of 3000 differ; first {bad[0]!r}: {nfc_tok.decode(nfc_tok.encode(bad[0], add_bos=False))!r}"


def test_nfc_equals_python_unicodedata_on_corpus_and_decomposed_corpus(nfc_tok):
    texts = CORPUS + [unicodedata.normalize("NFD", s) for s in CORPUS] + [unicodedata.normalize("NFKD", s) for s in CORPUS]
    bad = [s for s in texts if nfc_tok.decode(nfc_tok.encode(s, add_bos=False)) != unicodedata.normalize("NFC", s)]
    assert not bad, f"{len(bad)} differ; first {bad[0]!r}"


def test_without_the_key_text_is_not_normalized(tmp_path):
    tok = write_vocab(tmp_path / "plain.gguf", None)
    s = "e\u0301 \u212B"
    assert tok.decode(tok.encode(s, add_bos=False)) == s


def test_known_compositions(nfc_tok):
    for s, want in [("e\u0301", "\u00e9"), ("\u212B", "\u00C5"), ("\u1100\u1161\u11A8", "\uAC01"),
                    ("a\u0323\u0302", "\u1EAD"), ("a\u0302\u0323", "\u1EAD"), ("\u0958", "\u0915\u093C")]:
        assert nfc_tok.decode(nfc_tok.encode(s, add_bos=False)) == want, s


def test_unknown_normalizer_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="normalizer"):
        write_vocab(tmp_path / "bad.gguf", "nfkc")
