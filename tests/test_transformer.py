"""The reference-style `Transformer`: construction from ModelArgs, forward on batches,
state_dict views, load_state_dict with PyTorch's error semantics, from_pretrained."""

import numpy as np
import pytest

import torchless
from torchless import ModelArgs
from torchless.transformer import Transformer, to_gguf_name, to_reference_name

from reference.forward import ReferenceModel


def small_args(**kw):
    base = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=32, max_seq_len=64,
                max_batch_size=4, rope_theta=10000.0)
    base.update(kw)
    return ModelArgs(**base)


def normwise(a, b):
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def test_random_init_is_seeded_and_shaped_like_the_reference(seed):
    a, b = Transformer(small_args(), seed=seed), Transformer(small_args(), seed=seed)
    c = Transformer(small_args(), seed=seed + 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert set(sa) >= {"tok_embeddings.weight", "layers.0.attention.wq.weight", "layers.1.feed_forward.w2.weight",
                       "norm.weight", "output.weight"}
    hidden = small_args().resolved_hidden_dim
    assert sa["layers.0.feed_forward.w1.weight"].shape == (hidden, 64)
    assert sa["layers.0.attention.wk.weight"].shape == (2 * 16, 64)
    assert np.array_equal(np.asarray(sa["output.weight"]), np.asarray(sb["output.weight"]))
    assert not np.array_equal(np.asarray(sa["output.weight"]), np.asarray(sc["output.weight"]))


def test_forward_matches_the_float64_reference(tmp_path, seed):
    t = Transformer(small_args(), seed=seed, kv_dtype="f32")
    path = tmp_path / "same.gguf"
    sd = t.state_dict()
    torchless.gguf.write(path, t.params.to_gguf_metadata(), {to_gguf_name(k): v for k, v in sd.items()})
    ref = ReferenceModel.from_gguf(path)
    tokens = np.random.default_rng(seed).integers(0, 96, size=(1, 12))
    got = t.forward(tokens)
    want = ref.forward(tokens[0])
    assert got.shape == (1, 12, 96) and got.dtype == np.float32
    assert normwise(got[0], want).max() <= 1e-4


@pytest.mark.parametrize("kv, bound", [("f32", 1e-5), ("f16", 1e-4)])
def test_batch_equals_rows_and_split_equals_whole(seed, kv, bound):
    """Batching and splitting change only the order of float32 rounding; an F16 cache can turn
    such a difference into one F16 step of a stored key (measured 1.2e-5 on one seed)."""
    t = Transformer(small_args(), seed=seed, kv_dtype=kv)
    tokens = np.random.default_rng(seed).integers(0, 96, size=(3, 10))
    whole = t.forward(tokens)
    for b in range(3):
        row = t.forward(tokens[b:b + 1])
        assert normwise(row[0], whole[b]).max() <= bound
    first = t.forward(tokens[:, :4], start_pos=0)
    rest = t.forward(tokens[:, 4:], start_pos=4)
    assert normwise(np.concatenate([first, rest], axis=1), whole).max() <= bound


def test_forward_accepts_lists_numpy_and_array_likes(seed):
    t = Transformer(small_args(), seed=seed)

    class Tensorish:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    ids = [[1, 5, 9]]
    a = t.forward(ids)
    assert np.array_equal(a, t.forward(np.array(ids, np.int32)))
    assert np.array_equal(a, t.forward(Tensorish(np.array(ids))))
    with pytest.raises(TypeError):
        t.forward([[1.5, 2.0]])
    with pytest.raises(ValueError, match="max_batch_size"):
        t.forward(np.zeros((5, 2), np.int64))
    with pytest.raises(ValueError, match="max_seq_len"):
        t.forward([[1, 2]], start_pos=63)
    with pytest.raises(ValueError, match="out of range"):
        t.forward([[96]])
    assert np.array_equal(a, t.forward(ids))  # still usable


def test_state_dict_views_are_zero_copy_and_outlive_the_model(seed):
    t = Transformer(small_args(), seed=seed)
    v = t.state_dict()["layers.0.attention.wq.weight"]
    a1, a2 = np.asarray(v), np.asarray(t.state_dict()["layers.0.attention.wq.weight"])
    assert np.shares_memory(a1, a2) and not a1.flags.writeable
    copy = a1.copy()
    del t
    import gc

    gc.collect()
    assert np.array_equal(np.asarray(v), copy)


def test_load_state_dict_round_trips_and_changes_the_output(seed):
    t = Transformer(small_args(), seed=seed)
    u = Transformer(small_args(), seed=seed + 7)
    ids = [[3, 1, 4, 1, 5]]
    assert not np.allclose(t.forward(ids), u.forward(ids))
    result = t.load_state_dict({k: np.asarray(v) for k, v in u.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert np.array_equal(t.forward(ids), u.forward(ids))
    # GGUF names and TensorViews work too
    t.load_state_dict({to_gguf_name(k): v for k, v in Transformer(small_args(), seed=seed).state_dict().items()})
    assert np.array_equal(t.forward(ids), Transformer(small_args(), seed=seed).forward(ids))


def test_load_state_dict_reports_missing_unexpected_and_shape_errors(seed):
    t = Transformer(small_args(), seed=seed)
    sd = {k: np.asarray(v) for k, v in t.state_dict().items()}
    before = t.forward([[1, 2, 3]])
    partial = dict(sd)
    del partial["norm.weight"]
    partial["layers.9.attention.wq.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"norm.weight"') as e:
        t.load_state_dict(partial)
    assert "Unexpected key(s)" in str(e.value) and "layers.9.attention.wq.weight" in str(e.value)
    result = t.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["norm.weight"] and result.unexpected_keys == ["layers.9.attention.wq.weight"]
    bad = dict(sd)
    bad["tok_embeddings.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(RuntimeError, match="size mismatch for tok_embeddings.weight"):
        t.load_state_dict(bad)
    assert np.array_equal(t.forward([[1, 2, 3]]), before)  # failed loads change nothing


def test_names_map_both_ways():
    for ref, g in [("tok_embeddings.weight", "token_embd.weight"), ("layers.3.feed_forward.w2.weight", "blk.3.ffn_down.weight"),
                   ("layers.0.attention_norm.weight", "blk.0.attn_norm.weight"), ("norm.weight", "output_norm.weight")]:
        assert to_gguf_name(ref) == g and to_reference_name(g) == ref
    assert to_gguf_name("blk.0.attn_q.bias") == "blk.0.attn_q.bias"


def test_from_pretrained_runs_the_fixture_like_model(fixtures):
    path = fixtures / "stories260K" / "stories260K.derived-f32.gguf"
    t = Transformer.from_pretrained(path, max_seq_len=128, max_batch_size=2).eval()
    assert t.params.dim == 64 and t.params.n_layers == 5 and t.params.vocab_size == 512
    m = torchless.Model(path, max_seq_len=128)
    ids = [1, 403, 407, 261]
    assert np.array_equal(t.forward([ids])[0], m.forward(ids))
    assert "layers.4.feed_forward.w3.weight" in t.state_dict()


def test_invalid_args_name_the_field():
    with pytest.raises(ValueError, match="n_kv_heads"):
        Transformer(small_args(n_kv_heads=3))
    with pytest.raises(ValueError, match="vocab_size"):
        Transformer(small_args(vocab_size=-1))
