"""Byte-level BPE (GGUF tokenizer.ggml.model = "gpt2") and its pre-tokenizers, checked
against llama.cpp's reference ids and against HF tokenizers built from the same vocabulary
and merges. The pre-tokenizer regexes below are llama.cpp's (src/llama-vocab.cpp,
llm_tokenizer_bpe), applied in turn as llama.cpp applies them."""

import json
from pathlib import Path

import pytest

import torchless
from torchless import _C

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, decoders, models, pre_tokenizers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
GPT2_VOCAB = FIXTURES / "vocab" / "ggml-vocab-gpt-2.gguf"
CORPUS = json.loads((REPO / "tests" / "data" / "tokenizer_corpus.json").read_text(encoding="utf-8"))

# ---------------------------------------------------------------- the regexes (data)

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# DeepSeek LLM's letter class, written with escapes: upstream it is literal characters,
# several of which (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) an NFC-normalizing
# copy would silently change.
DEEPSEEK_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481"
    "\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b"
    "\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b"
    "\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb"
    "\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128"
    "\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4"
    "\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943"
)
DEEPSEEK_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"

REGEXES = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    "gpt-2": [GPT2],
    "llama-bpe": [LLAMA3],
    "smollm": [r"\p{N}", GPT2],
    "qwen2": [QWEN2],
    "deepseek-llm": [
        "[\r\n]",
        r"\s?[" + DEEPSEEK_LETTERS + "]+",
        "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
        r"\s+$",
        DEEPSEEK_CJK,
        r"\p{N}+",
    ],
    "deepseek-coder": ["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", DEEPSEEK_CJK, r"\p{N}"],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
}

# llama.cpp's names that share a regex (and a matcher) with one of the above.
ALIASES = {
    "llama3": "llama-bpe", "llama-v3": "llama-bpe", "falcon3": "llama-bpe", "dbrx": "llama-bpe",
    "mpt": "gpt-2", "phi-2": "gpt-2", "olmo": "gpt-2", "jais": "gpt-2",
    "starcoder": "smollm", "refact": "smollm", "command-r": "smollm", "codeshell": "smollm",
    "deepseek-r1-qwen": "qwen2", "stablelm2": "qwen2",
}  # fmt: skip


def hf_split(regexes):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r), "isolated") for r in regexes])


def hf_pieces(pretok, text):
    return [piece for piece, _ in pretok.pre_tokenize_str(text)]


def hf_bpe(path, regexes, ignore_merges=False):
    """HF tokenizers' byte-level BPE over the vocabulary and merges stored in a GGUF file."""
    md = torchless.load(path).metadata
    vocab = {tok: i for i, tok in enumerate(md["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in md["tokenizer.ggml.merges"]]
    tk = tokenizers.Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [hf_split(regexes), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tk.decoder = decoders.ByteLevel()
    return tk


@pytest.fixture(scope="module")
def smollm2_path():
    try:
        return torchless.hub.path("smollm2-135m-instruct")
    except Exception as e:
        pytest.skip(f"smollm2-135m-instruct is not available: {e}")


VOCABS = {
    "gpt2-fixture": lambda request: (GPT2_VOCAB, REGEXES["gpt-2"]),
    "smollm2": lambda request: (request.getfixturevalue("smollm2_path"), REGEXES["smollm"]),
}

# ---------------------------------------------------------------- pre-tokenizers


@pytest.mark.parametrize("name", sorted(REGEXES) + sorted(ALIASES))
def test_pretokenize_pieces_equal_hf_regex_split_on_corpus(name):
    pretok = hf_split(REGEXES[ALIASES.get(name, name)])
    bad = [s for s in CORPUS if _C.pretokenize(name, s) != hf_pieces(pretok, s)]
    assert not bad, f"{len(bad)} of {len(CORPUS)} differ; first {bad[0]!r}: ours {_C.pretokenize(name, bad[0])}, " \
        f"regex {hf_pieces(pretok, bad[0])}"


@pytest.mark.parametrize("name", ["gpt-2", "default", "deepseek-llm"])
def test_pretokenize_classes_every_code_point_as_the_regex_engine_does(name):
    """Each code point after a space and before a letter: its class (\\p{L}, \\p{N}, \\p{P},
    \\s, none) decides where the pieces fall, so this compares our Unicode tables with the
    regex engine's, code point by code point (surrogates excepted)."""
    text = "".join(" " + chr(c) + "a" for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    ours = _C.pretokenize(name, text)
    theirs = hf_pieces(hf_split(REGEXES[name]), text)
    if ours != theirs:
        i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        pytest.fail(f"first difference at piece {i}: ours {ours[i - 1:i + 2]!r}, regex {theirs[i - 1:i + 2]!r}")


@pytest.mark.parametrize(
    "name, text, pieces",
    [
        ("gpt-2", "a  b", ["a", " ", " b"]),  # \s+(?!\S) gives back the space before 'b'
        ("gpt-2", "x   \n", ["x", "   \n"]),  # ... and keeps it all at the end
        ("gpt-2", "I'm", ["I", "'m"]),
        ("gpt-2", "I'M", ["I", "'", "M"]),  # GPT-2's contractions are lower-case only
        ("llama-bpe", "I'M", ["I", "'M"]),  # LLaMA-3's are case-insensitive
        ("llama-bpe", "1234567", ["123", "456", "7"]),
        ("qwen2", "123", ["1", "2", "3"]),
        ("llama-bpe", "a \n\n b", ["a", " \n\n", " b"]),  # \s*[\r\n]+ ends at the last newline
        ("llama-bpe", "...\n\nx", ["...\n\n", "x"]),
        ("smollm", "abc123", ["abc", "1", "2", "3"]),
        ("default", "12345", ["123", "45"]),
    ],
)
def test_pretokenize_known_splits(name, text, pieces):
    assert _C.pretokenize(name, text) == pieces


def test_pretokenize_empty_text_has_no_pieces():
    assert _C.pretokenize("llama-bpe", "") == []


def test_unknown_pretokenizer_name_raises_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown pre-tokenizer 'no-such'.*llama-bpe.*smollm"):
        _C.pretokenize("no-such", "x")


# ---------------------------------------------------------------- BPE ids


def vocab_cases(path):
    """llama.cpp's test-tokenizer-0 cases: inputs split by __ggml_vocab_test__ lines,
    one line of expected ids per input (HF add_special_tokens=False)."""
    inputs = Path(str(path) + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    if inputs and inputs[-1] == "":
        inputs.pop()
    outputs = Path(str(path) + ".out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(x) for x in outputs[i].split()]) for i, text in enumerate(inputs)]


def test_gpt2_vocab_ids_equal_llama_cpp_reference_cases():
    tok = torchless.Tokenizer(str(GPT2_VOCAB))
    cases = vocab_cases(GPT2_VOCAB)
    assert len(cases) >= 40
    bad = [(text, ids) for text, ids in cases if tok.encode(text, add_bos=False) != ids]
    assert not bad, f"{len(bad)} of {len(cases)} differ; first {bad[0][0]!r}: ours {tok.encode(bad[0][0], add_bos=False)}, " \
        f"llama.cpp {bad[0][1]}"


@pytest.mark.parametrize("vocab", sorted(VOCABS))
def test_ids_equal_hf_tokenizers_bpe_on_corpus(vocab, request):
    path, regexes = VOCABS[vocab](request)
    tok = torchless.Tokenizer(str(path))
    hf = hf_bpe(path, regexes)
    bad = [s for s in CORPUS if tok.encode(s, add_bos=False) != hf.encode(s, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(CORPUS)} differ; first {bad[0]!r}: ours {tok.encode(bad[0], add_bos=False)}, " \
        f"HF {hf.encode(bad[0], add_special_tokens=False).ids}"


@pytest.mark.parametrize("vocab", sorted(VOCABS))
def test_decode_of_encode_gives_back_the_text(vocab, request):
    path, _ = VOCABS[vocab](request)
    tok = torchless.Tokenizer(str(path))
    bad = [s for s in CORPUS if tok.decode(tok.encode(s, add_bos=False)) != s]
    assert not bad, f"{len(bad)} of {len(CORPUS)} do not round-trip; first {bad[0]!r}"


def test_token_to_piece_reverses_the_byte_map():
    tok = torchless.Tokenizer(str(GPT2_VOCAB))
    md = torchless.load(GPT2_VOCAB).metadata
    tokens = list(md["tokenizer.ggml.tokens"])
    assert tok.token_to_piece(tokens.index("Ġthe")) == b" the"
    assert tok.token_to_piece(tokens.index("Ċ")) == b"\n"
    assert tok.token_to_piece(tokens.index("ĉ")) == b"\t"


# ---------------------------------------------------------------- ignore_merges (LLaMA-3)


def write_vocab(path, tokens, merges, pre):
    torchless.gguf.write(
        path,
        {
            "general.architecture": "llama",
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [1] * len(tokens),
            "tokenizer.ggml.merges": merges,
        },
        types={"tokenizer.ggml.tokens": "array[string]", "tokenizer.ggml.merges": "array[string]",
               "tokenizer.ggml.token_type": "array[int32]"},
    )


BYTE_TOKENS = [chr(c) for c in range(0x21, 0x7F)] + ["Ġ"]


@pytest.mark.parametrize("pre, expect", [("llama-bpe", ["abcd"]), ("dbrx", ["ab", "cd"])])
def test_ignore_merges_emits_a_piece_that_is_a_token_whole(tmp_path, pre, expect):
    """'abcd' is a token that no merge reaches; llama-bpe (ignore_merges) emits it whole,
    dbrx (same regex, merges applied) emits what the merges make."""
    tokens = BYTE_TOKENS + ["ab", "cd", "abcd"]
    path = tmp_path / "toy.gguf"
    write_vocab(path, tokens, ["a b", "c d"], pre)
    tok = torchless.Tokenizer(str(path))
    assert [tokens[i] for i in tok.encode("abcd", add_bos=False)] == expect


def test_ignore_merges_ids_equal_hf_tokenizers_on_corpus(tmp_path):
    """The GPT-2 vocabulary under LLaMA-3's pre-tokenizer and ignore_merges, against HF's
    BPE(ignore_merges=True). Every fifth merge is left out, so that (as in LLaMA-3's
    vocabulary) many tokens are out of the merges' reach and ignore_merges matters."""
    md = torchless.load(GPT2_VOCAB).metadata
    merges = [m for i, m in enumerate(md["tokenizer.ggml.merges"]) if i % 5 != 4]
    path = tmp_path / "gpt2-as-llama3.gguf"
    write_vocab(path, list(md["tokenizer.ggml.tokens"]), merges, "llama-bpe")
    tok = torchless.Tokenizer(str(path))
    hf = hf_bpe(path, REGEXES["llama-bpe"], ignore_merges=True)
    hf_merging = hf_bpe(path, REGEXES["llama-bpe"], ignore_merges=False)
    exercised = sum(hf.encode(s).ids != hf_merging.encode(s).ids for s in CORPUS)
    print(f"{exercised} corpus strings depend on ignore_merges")
    assert exercised > 50, f"only {exercised} corpus strings depend on ignore_merges"
    bad = [s for s in CORPUS if tok.encode(s, add_bos=False) != hf.encode(s, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(CORPUS)} differ; first {bad[0]!r}"


@pytest.mark.parametrize("pre, adds_bos", [("llama-bpe", True), ("gpt-2", False), ("smollm", False)])
def test_pre_name_sets_the_add_bos_default_as_llama_cpp(tmp_path, pre, adds_bos):
    tokens = BYTE_TOKENS + ["<s>"]
    path = tmp_path / "toy.gguf"
    torchless.gguf.write(
        path,
        {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
         "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.bos_token_id": len(tokens) - 1},
        types={"tokenizer.ggml.tokens": "array[string]", "tokenizer.ggml.merges": "array[string]",
               "tokenizer.ggml.bos_token_id": "uint32"},
    )
    ids = torchless.Tokenizer(str(path)).encode("a")
    assert ids == ([len(tokens) - 1] if adds_bos else []) + [tokens.index("a")]
