"""llama2.c checkpoints (karpathy/llama2.c run.c / export.py layouts) read as a GGUF `llama`
table: stories260K.bin holds the same weights as its GGUF twin and, with either of its
tokenizers given from outside, prints the text llama2.c's run.c prints; v1 ("ak42") files
written here in export.py's version1_export order read the same; v2 (int8 groups) files
dequantize to exactly int8 x scale."""

import struct

import numpy as np
import pytest

import torchless
from torchless import Llama, Model, Transformer, cli

TOKENIZERS = ["tok512.bin", "tok512.model"]


@pytest.fixture(scope="module")
def stories_dir(fixtures):
    return fixtures / "stories260K"


@pytest.fixture(scope="module")
def expected(stories_dir):
    return (stories_dir / "stories260K.expected_stdout.txt").read_text()


@pytest.fixture(scope="module")
def twin(stories_dir):
    return torchless.load(stories_dir / "stories260K.derived-f32.gguf")


# ---------------------------------------------------------------- the table


def test_stories260k_bin_is_a_llama_table_with_the_twins_weights(stories_dir, twin):
    f = torchless.load(stories_dir / "stories260K.bin")
    assert f.format == "llama2c" and f.version == 0
    md = f.metadata
    assert md["general.architecture"] == "llama" and md["torchless.source"] == "llama2c"
    for key in ("llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                "llama.attention.head_count", "llama.attention.head_count_kv", "llama.context_length"):
        assert md[key] == twin.metadata[key], key
    assert f.metadata_types["llama.block_count"] == "uint32"
    assert md["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert md["llama.rope.freq_base"] == 10000.0
    assert "tokenizer.ggml.tokens" not in md  # a checkpoint has no vocabulary
    # the shared classifier: no output.weight (the twin stores a copy of the embedding)
    assert set(twin.tensors) - set(f.tensors) == {"output.weight"}
    for name in f.tensors:
        a, b = f.tensors[name], twin.tensors[name]
        assert a.dtype == "f32" and a.shape == b.shape, name
        assert np.array_equal(np.asarray(a), np.asarray(b)), name
    assert np.array_equal(np.asarray(twin.tensors["output.weight"]), np.asarray(f.tensors["token_embd.weight"]))


def test_views_point_into_the_file_without_copies(stories_dir):
    f = torchless.load(stories_dir / "stories260K.bin")
    raw = (stories_dir / "stories260K.bin").read_bytes()
    emb = f.tensors["token_embd.weight"]
    assert emb.offset == 28  # right after the 7-int header (run.c's memory_map_weights)
    assert np.array_equal(np.asarray(emb).ravel(), np.frombuffer(raw, np.float32, 512 * 64, 28))
    assert not np.asarray(emb).flags.writeable


# ---------------------------------------------------------------- generation with an outside tokenizer


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_greedy_200_steps_print_the_known_story(stories_dir, expected, tokenizer):
    m = Model(stories_dir / "stories260K.bin", tokenizer_path=stories_dir / tokenizer)
    assert m.tokenizer.n_vocab == 512
    assert m.generate([1], max_new_tokens=200, temperature=0) == expected


def test_the_same_text_as_the_gguf_twin_through_forward(stories_dir, rng):
    a = Model(stories_dir / "stories260K.bin", tokenizer_path=stories_dir / "tok512.model")
    b = Model(stories_dir / "stories260K.derived-f32.gguf")
    ids = [1] + [int(x) for x in rng.integers(3, 512, 20)]
    np.testing.assert_array_equal(a.forward(ids), b.forward(ids))


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_transformer_from_pretrained_and_llama_build(stories_dir, expected, tokenizer):
    tok_path = stories_dir / tokenizer
    t = Transformer.from_pretrained(stories_dir / "stories260K.bin", tokenizer_path=tok_path)
    assert t.params.dim == 64 and t.params.n_layers == 5 and t.params.vocab_size == 512
    assert t.params.tie_word_embeddings  # no output.weight: the classifier is the embedding
    assert t.model.generate([1], max_new_tokens=200, temperature=0) == expected
    llm = Llama.build(stories_dir / "stories260K.bin", tokenizer_path=tok_path, max_seq_len=256,
                      max_batch_size=1, verbose=False)
    toks, _ = llm.generate([[1]], max_gen_len=200, temperature=0)
    assert llm.tokenizer.decode(toks[0]) == expected


def test_model_without_a_tokenizer_runs_forward_but_not_text(stories_dir):
    m = Model(stories_dir / "stories260K.bin")
    assert m.forward([1, 2, 3]).shape == (3, 512)
    with pytest.raises((ValueError, FileNotFoundError)):
        m.generate("Once upon a time", max_new_tokens=5)


def test_same_weights_other_tokenizer_is_another_model(stories_dir):
    a = Model(stories_dir / "stories260K.bin", tokenizer_path=stories_dir / "tok512.model")
    b = Model(stories_dir / "stories260K.bin")
    assert a.tokenizer_path is not None and b.tokenizer_path is None
    assert a.generate([1], max_new_tokens=5, temperature=0)
    with pytest.raises((ValueError, FileNotFoundError)):
        b.generate("Once", max_new_tokens=5)


def test_a_bad_tokenizer_path_raises(stories_dir, tmp_path):
    with pytest.raises(FileNotFoundError):
        Model(stories_dir / "stories260K.bin", tokenizer_path=tmp_path / "missing.model")
    big = tmp_path / "big.gguf"  # a vocabulary larger than the embedding
    torchless.gguf.write(big, {"tokenizer.ggml.model": "llama",
                               "tokenizer.ggml.tokens": [f"t{i}" for i in range(600)],
                               "tokenizer.ggml.scores": [0.0] * 600,
                               "tokenizer.ggml.token_type": torchless.gguf.Value([1] * 600, "array[int32]")})
    with pytest.raises(ValueError, match="600 tokens but the embedding only 512"):
        Model(stories_dir / "stories260K.bin", tokenizer_path=big)


def test_cli_run_with_tokenizer_prints_the_known_story(capsys, stories_dir, expected):
    args = ["run", str(stories_dir / "stories260K.bin"), "Once upon a time", "-n", "30", "--temp", "0", "--raw",
            "--tokenizer", str(stories_dir / "tok512.bin")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    m = Model(stories_dir / "stories260K.derived-f32.gguf")
    assert out == m.generate("Once upon a time", max_new_tokens=30, temperature=0) + "\n"


# ---------------------------------------------------------------- v1 ("ak42") and unshared classifiers


def v0_weights(path):
    """run.c order: (name, float32 array) of stories260K.bin, freq_cis included."""
    raw = path.read_bytes()
    dim, hidden, L, heads, kv_heads, vocab, seq = struct.unpack("<7i", raw[:28])
    hs = dim // heads
    data = np.frombuffer(raw, np.float32, offset=28)
    out, at = {}, 0

    def take(name, *shape):
        nonlocal at
        n = int(np.prod(shape))
        out[name] = data[at:at + n].reshape(shape)
        at += n

    take("emb", vocab, dim)
    take("att_norm", L, dim)
    take("wq", L, heads * hs, dim)
    take("wk", L, kv_heads * hs, dim)
    take("wv", L, kv_heads * hs, dim)
    take("wo", L, dim, heads * hs)
    take("ffn_norm", L, dim)
    take("w1", L, hidden, dim)
    take("w2", L, dim, hidden)
    take("w3", L, hidden, dim)
    take("norm", dim)
    take("freq", seq * hs)
    assert at == data.size
    return (dim, hidden, L, heads, kv_heads, vocab, seq), out


def write_v1(path, params, w, classifier=None):
    """export.py version1_export: 256-byte header, norms first, no freq_cis, classifier last."""
    head = struct.pack("<Ii7iB", 0x616B3432, 1, *params, int(classifier is None))
    order = ["att_norm", "ffn_norm", "norm", "emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3"]
    body = b"".join(np.ascontiguousarray(w[k], np.float32).tobytes() for k in order)
    if classifier is not None:
        body += classifier.astype(np.float32).tobytes()
    path.write_bytes(head + b"\0" * (256 - len(head)) + body)


def test_v1_checkpoint_reads_the_same_weights_and_story(stories_dir, tmp_path, expected):
    params, w = v0_weights(stories_dir / "stories260K.bin")
    path = tmp_path / "stories260K-v1.ckpt"  # recognised by its magic, not its name
    write_v1(path, params, w)
    f = torchless.load(path)
    assert f.format == "llama2c" and f.version == 1 and "output.weight" not in f.tensors
    v0 = torchless.load(stories_dir / "stories260K.bin")
    for name in v0.tensors:
        assert np.array_equal(np.asarray(f.tensors[name]), np.asarray(v0.tensors[name])), name
    m = Model(path, tokenizer_path=stories_dir / "tok512.model")
    assert m.generate([1], max_new_tokens=200, temperature=0) == expected


@pytest.mark.parametrize("version", [0, 1])
def test_an_unshared_classifier_is_output_weight(stories_dir, tmp_path, rng, version):
    params, w = v0_weights(stories_dir / "stories260K.bin")
    cls = rng.standard_normal((params[5], params[0])).astype(np.float32)
    path = tmp_path / f"unshared-v{version}.bin"
    if version == 0:  # a negative vocab_size says the classifier follows freq_cis
        raw = (stories_dir / "stories260K.bin").read_bytes()
        path.write_bytes(struct.pack("<7i", *params[:5], -params[5], params[6]) + raw[28:] + cls.tobytes())
    else:
        write_v1(path, params, w, classifier=cls)
    f = torchless.load(path)
    assert f.metadata["llama.vocab_size"] == 512
    assert np.array_equal(np.asarray(f.tensors["output.weight"]), cls)
    m = Model(path)
    x = Model(stories_dir / "stories260K.bin")
    ids = [1, 5, 9]
    # a different classifier gives different logits from the same hidden state
    assert not np.allclose(m.forward(ids), x.forward(ids))


def quantize_q80(w, group_size):
    """export.py's quantize_q80 in float32: scale = max|w| / 127 per group, q = round(w / scale)."""
    w = np.ascontiguousarray(w, np.float32).reshape(-1, group_size)
    scale = (np.abs(w).max(axis=1) / np.float32(127.0)).astype(np.float32)
    q = np.round(w / scale[:, None]).astype(np.int8)
    return q, scale


def write_v2(path, params, w, group_size):
    """export.py version2_export: the v1 header + group size, float32 norms, then each matrix
    as its int8 values followed by its float32 scales."""
    head = struct.pack("<Ii7iBi", 0x616B3432, 2, *params, 1, group_size)
    body = b"".join(np.ascontiguousarray(w[k], np.float32).tobytes() for k in ["att_norm", "ffn_norm", "norm"])
    expected = {}
    mats = [("token_embd.weight", w["emb"])]
    for kind, name in [("wq", "attn_q"), ("wk", "attn_k"), ("wv", "attn_v"), ("wo", "attn_output"),
                       ("w1", "ffn_gate"), ("w2", "ffn_down"), ("w3", "ffn_up")]:
        mats += [(f"blk.{l}.{name}.weight", w[kind][l]) for l in range(params[2])]
    for name, m in mats:
        q, scale = quantize_q80(m, group_size)
        body += q.tobytes() + scale.tobytes()
        expected[name] = (q.astype(np.float32) * scale[:, None]).reshape(m.shape)
    path.write_bytes(head + b"\0" * (256 - len(head)) + body)
    return expected


@pytest.mark.parametrize("group_size", [64, 32])
def test_v2_checkpoint_dequantizes_exactly_and_tells_the_story(stories_dir, tmp_path, expected, group_size):
    params, w = v0_weights(stories_dir / "stories260K.bin")
    path = tmp_path / f"q80-{group_size}.bin"
    want = write_v2(path, params, w, group_size)
    f = torchless.load(path)
    assert f.format == "llama2c" and f.version == 2
    for name, x in want.items():
        assert np.array_equal(np.asarray(f.tensors[name]), x), name
    v0 = torchless.load(stories_dir / "stories260K.bin")
    for name in ("blk.0.attn_norm.weight", "blk.4.ffn_norm.weight", "output_norm.weight"):
        assert np.array_equal(np.asarray(f.tensors[name]), np.asarray(v0.tensors[name]))
    # the dequantized matrices outlive the file object, like views of the mapping
    q = f.tensors["blk.1.attn_q.weight"]
    f.close()
    del f
    assert np.array_equal(np.asarray(q), want["blk.1.attn_q.weight"])
    # int8 weights move the logits a little, not the story's opening
    m = Model(path, tokenizer_path=stories_dir / "tok512.model")
    text = m.generate([1], max_new_tokens=200, temperature=0)
    assert text[:40] == expected[:40], text


def test_a_safetensors_file_named_bin_is_still_safetensors(tmp_path, rng):
    from safetensors.numpy import save_file

    path = tmp_path / "pytorch_like.bin"
    save_file({"w": rng.standard_normal((2, 3)).astype(np.float32)}, str(path))
    assert torchless.load(path).format == "safetensors"
