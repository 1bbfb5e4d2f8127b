"""Self-checks of the float64 NumPy reference (tests/reference/) that need no engine.

The reference is what test_forward.py holds the C forward pass to, so it is checked here
against a known output (stories260K greedy text, as llama2.c prints it) and against
identities that any correct implementation satisfies (prefill = incremental decode,
NORM RoPE = NEOX RoPE on permuted q/k rows, GQA = MHA with repeated kv heads, LLaMA-3
scaling from the formula = from llama.cpp's `rope_freqs` divisors; an HF folder read with HF
names = the same model written as GGUF by the `gguf` package; a window at least as long as the
sequence = no window; every architecture option moves the logits well past test tolerances).
The reference against transformers itself is test_hf_transformers.py.
"""

import dataclasses
import math

import numpy as np
import pytest

from reference import hf, hf_synth, synth
from reference.forward import (Config, ReferenceModel, apply_rope, detokenize, gelu_tanh, llama3_rope_factors,
                               llama3_scale, longrope_attn_factor, normwise_error, quantize_act_q8_0,
                               quantize_act_q8_k, rope_inv_freq, softcap)

STORIES = "stories260K/stories260K.derived-f32.gguf"


@pytest.fixture(scope="module")
def stories(fixtures):
    return ReferenceModel.from_gguf(fixtures / STORIES)


def test_stories260k_greedy_text_matches_llama2c(stories, fixtures):
    # llama2.c `run stories260K.bin -t 0 -n 200`: 200 steps from BOS, each prints the
    # next token's piece (the leading space of the piece after BOS is dropped).
    expected = (fixtures / "stories260K/stories260K.expected_stdout.txt").read_text()
    toks = stories.greedy([1], 200)
    assert toks[0] == 1 and 1 not in toks[1:]
    assert detokenize(stories.vocab, toks[1:]) == expected.rstrip("\n")


def test_stories260k_config(stories):
    c = stories.config
    assert (c.arch, c.n_vocab, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim) == \
        ("llama", 512, 64, 5, 8, 4, 8, 172)
    assert c.rope_style == "norm" and c.rope_theta == 10000.0 and not c.tied_embeddings


def _prefill_vs_decode(model, toks, chunks):
    model.reset()
    full = model.forward(toks, 0)
    model.reset()
    parts, at = [], 0
    for n in chunks:
        parts.append(model.forward(toks[at:at + n], at))
        at += n
    assert at == len(toks)
    return full, np.concatenate(parts)


def test_stories260k_prefill_equals_decode(stories, rng):
    toks = [1] + list(rng.integers(3, 512, 29))
    full, inc = _prefill_vs_decode(stories, toks, [1] * 30)
    assert np.max(np.abs(full - inc)) <= 1e-12 * np.max(np.abs(full))
    full, inc = _prefill_vs_decode(stories, toks, [7, 1, 13, 9])
    assert np.max(np.abs(full - inc)) <= 1e-12 * np.max(np.abs(full))


@pytest.mark.parametrize("variant", synth.VARIANTS)
def test_prefill_equals_incremental_decode(variant, rng):
    spec = synth.make(variant, rng)
    m = ReferenceModel(spec.config, spec.weights)
    toks = list(rng.integers(0, spec.config.n_vocab, 20))
    full, inc = _prefill_vs_decode(m, toks, [1] * 20)
    assert normwise_error(inc, full).max() <= 1e-12
    full, inc = _prefill_vs_decode(m, toks, [5, 1, 1, 9, 4])
    assert normwise_error(inc, full).max() <= 1e-12
    # causality: changing a later token leaves earlier logits untouched
    m.reset()
    other = m.forward(toks[:10] + [int(t) ^ 1 for t in toks[10:]], 0)
    assert np.array_equal(other[:10], full[:10]) and not np.allclose(other[10:], full[10:])


def test_rope_pairs_rotate_by_position_times_frequency():
    # one head, rope_dim 4: pairs (0,1),(2,3) for NORM, (0,2),(1,3) for NEOX, angle p * f_i
    x = np.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    f = np.array([0.5, 0.01])
    p = np.array([3.0])
    y = apply_rope(x, p, f, "norm", 4)[0, 0]
    a0, a1 = 3 * 0.5, 3 * 0.01
    np.testing.assert_allclose(y[:2], [np.cos(a0) - 2 * np.sin(a0), np.sin(a0) + 2 * np.cos(a0)], rtol=1e-15)
    np.testing.assert_allclose(y[2:4], [3 * np.cos(a1) - 4 * np.sin(a1), 3 * np.sin(a1) + 4 * np.cos(a1)], rtol=1e-15)
    assert y[4] == 5.0  # past rope_dim: not rotated
    y = apply_rope(x, p, f, "neox", 4)[0, 0]
    np.testing.assert_allclose(y[[0, 2]], [np.cos(a0) - 3 * np.sin(a0), np.sin(a0) + 3 * np.cos(a0)], rtol=1e-15)
    np.testing.assert_allclose(y[[1, 3]], [2 * np.cos(a1) - 4 * np.sin(a1), 2 * np.sin(a1) + 4 * np.cos(a1)], rtol=1e-15)
    # inverse frequencies theta^(-2i/d)
    c = Config(dim=8, n_heads=1, rope_theta=10000.0).finish()
    np.testing.assert_allclose(rope_inv_freq(c), 10000.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-15)


@pytest.mark.parametrize("variant", ["llama", "qwen3"])
def test_rope_norm_equals_neox_on_permuted_rows(variant, rng):
    """NEOX RoPE on q/k rows permuted (within each head: 2i -> i, 2i+1 -> i + d/2) gives the
    same logits as NORM RoPE on the original rows: the two styles are consistent."""
    spec = synth.make(variant, rng)
    c = spec.config
    norm_cfg = dataclasses.replace(c, rope_style="norm")
    neox_cfg = dataclasses.replace(c, rope_style="neox")
    w = dict(spec.weights)
    for l in range(c.n_layers):
        p = f"blk.{l}."
        w[p + "attn_q.weight"] = synth.permute_for_neox(w[p + "attn_q.weight"], c.n_heads, c.head_dim)
        w[p + "attn_k.weight"] = synth.permute_for_neox(w[p + "attn_k.weight"], c.n_kv_heads, c.head_dim)
        if c.qk_norm:
            w[p + "attn_q_norm.weight"] = synth.permute_for_neox(w[p + "attn_q_norm.weight"], 1, c.head_dim)
            w[p + "attn_k_norm.weight"] = synth.permute_for_neox(w[p + "attn_k_norm.weight"], 1, c.head_dim)
    toks = rng.integers(0, c.n_vocab, 16)
    a = ReferenceModel(norm_cfg, spec.weights).forward(toks)
    b = ReferenceModel(neox_cfg, w).forward(toks)
    assert normwise_error(b, a).max() <= 1e-12
    # and the style matters: the same rows under the other style differ
    assert normwise_error(ReferenceModel(neox_cfg, spec.weights).forward(toks), a).max() > 1e-3


def test_gqa_equals_mha_with_repeated_kv_heads(rng):
    spec = synth.make("qwen2", rng)
    c = spec.config
    n_rep = c.n_heads // c.n_kv_heads
    w = dict(spec.weights)
    for l in range(c.n_layers):
        for t in ("attn_k", "attn_v"):
            for suffix in (".weight", ".bias"):
                a = w[f"blk.{l}.{t}{suffix}"]
                heads = a.reshape(c.n_kv_heads, c.head_dim, *a.shape[1:])
                w[f"blk.{l}.{t}{suffix}"] = np.repeat(heads, n_rep, axis=0).reshape(c.n_heads * c.head_dim, *a.shape[1:])
    mha = dataclasses.replace(c, n_kv_heads=c.n_heads)
    toks = rng.integers(0, c.n_vocab, 12)
    a = ReferenceModel(c, spec.weights).forward(toks)
    b = ReferenceModel(mha, w).forward(toks)
    assert normwise_error(b, a).max() <= 1e-12


def test_tied_head_is_the_embedding(rng):
    spec = synth.make("llama-tied", rng)
    w = dict(spec.weights, **{"output.weight": spec.weights["token_embd.weight"]})
    toks = rng.integers(0, spec.config.n_vocab, 8)
    a = ReferenceModel(spec.config, spec.weights).forward(toks)
    b = ReferenceModel(dataclasses.replace(spec.config, tied_embeddings=False), w).forward(toks)
    assert np.array_equal(a, b)


def test_llama3_scaling_regimes():
    # Meta's apply_scaling with factor 8, low 1, high 4, original context 8192
    f = np.array([1.0, 2 * np.pi / 100.0, 2 * np.pi / 5000.0, 2 * np.pi / 20000.0])
    got = llama3_scale(f, 8.0, 1.0, 4.0, 8192)
    s = (8192 / 5000.0 - 1.0) / 3.0
    np.testing.assert_allclose(got, [f[0], f[1], (1 - s) * f[2] / 8 + s * f[2], f[3] / 8], rtol=1e-15)
    # continuous at both band edges
    edges = 2 * np.pi / np.array([8192 / 4.0 * (1 + 1e-12), 8192 / 1.0 * (1 - 1e-12)])
    np.testing.assert_allclose(llama3_scale(edges, 8.0, 1.0, 4.0, 8192), [edges[0], edges[1] / 8], rtol=1e-9)


def test_llama3_formula_equals_rope_freqs_tensor(rng):
    spec = synth.make("llama3-rope", rng)
    c = spec.config
    no_tensor = {k: v for k, v in spec.weights.items() if k != "rope_freqs.weight"}
    by_formula = ReferenceModel(c, no_tensor)
    by_tensor = ReferenceModel(dataclasses.replace(c, rope_scaling="none"), spec.weights)
    # llama.cpp's converter: divisors 1 (high freq), factor (low freq), 1/((1-s)/factor + s) between
    fac = llama3_rope_factors(c.rope_dim, c.rope_theta, c.rope_factor, c.rope_low_freq_factor,
                              c.rope_high_freq_factor, c.rope_orig_ctx)
    assert fac[0] == 1.0 and fac[-1] == c.rope_factor and np.any((fac > 1) & (fac < c.rope_factor))
    toks = rng.integers(0, c.n_vocab, 24)
    a, b = by_formula.forward(toks), by_tensor.forward(toks)
    assert normwise_error(b, a).max() <= 1e-6  # the tensor holds float32 divisors
    # sensitivity: the scaling changes these short-prompt logits well beyond test tolerances
    plain = ReferenceModel(dataclasses.replace(c, rope_scaling="none"), no_tensor).forward(toks)
    assert normwise_error(plain, a)[8:].min() > 1e-3


def test_windowed_layers_keep_the_rope_freqs_divisors(rng):
    """Outside gemma3, windowed layers rotate like the others: a window as long as the
    sequence changes nothing, with the LLaMA-3 scaling given by formula or by tensor."""
    spec = synth.make("llama3-rope", rng)
    c = spec.config
    no_tensor = {k: v for k, v in spec.weights.items() if k != "rope_freqs.weight"}
    toks = rng.integers(0, c.n_vocab, 24)
    want = ReferenceModel(c, no_tensor).forward(toks)
    for cfg, w in ((dataclasses.replace(c, sliding_window=24), no_tensor),
                   (dataclasses.replace(c, sliding_window=24, rope_scaling="none"), spec.weights)):
        assert normwise_error(ReferenceModel(cfg, w).forward(toks), want).max() <= 1e-6


def test_linear_scaling_is_positions_over_factor(rng):
    spec = synth.make("llama-linear", rng)
    c = spec.config
    toks = rng.integers(0, c.n_vocab, 24)
    a = ReferenceModel(c, spec.weights).forward(toks)
    # the same model with theta' such that every f_i' = f_i / factor is not generally
    # available, so compare against rotating by hand: scaled inv_freq, unscaled positions
    plain_cfg = dataclasses.replace(c, rope_scaling="none", rope_factor=1.0)
    m = ReferenceModel(plain_cfg, spec.weights)
    m.inv_freq = m.inv_freq / c.rope_factor
    assert normwise_error(m.forward(toks), a).max() <= 1e-12
    plain = ReferenceModel(plain_cfg, spec.weights).forward(toks)
    assert normwise_error(plain, a)[4:].min() > 1e-3


def test_gguf_round_trip_of_every_variant(tmp_path, rng):
    """synth.write -> ReferenceModel.from_gguf (read by the gguf package) gives the config and
    the logits of the in-memory model (F32: exactly; rope_freqs: to float32 rounding)."""
    for variant in synth.VARIANTS:
        spec = synth.make(variant, rng)
        path = tmp_path / f"{variant}.gguf"
        synth.write(spec, path, "f32")
        r = ReferenceModel.from_gguf(path)
        want = spec.config
        if variant == "llama3-rope":  # stored as rope_freqs.weight divisors, not metadata
            want = dataclasses.replace(want, rope_scaling="none", rope_factor=1.0, rope_orig_ctx=8192)
        assert r.config == want, variant
        assert r.vocab[:3] == ["<unk>", "<s>", "</s>"] and r.vocab[3 + 0x0A] == "<0x0A>"
        toks = rng.integers(0, want.n_vocab, 10)
        mem = {k: v for k, v in spec.weights.items() if k != "rope_freqs.weight"}
        assert normwise_error(r.forward(toks), ReferenceModel(spec.config, mem).forward(toks)).max() <= 1e-7


@pytest.mark.parametrize("dtype,k_quant", [("q8_0", False), ("q4_0", False), ("q4_k", True)])
def test_quantized_variant_reads_dequantized_weights(dtype, k_quant, tmp_path, rng):
    import gguf
    from gguf import quants

    spec = synth.make("qwen3", rng, k_quant=k_quant)
    path = tmp_path / "m.gguf"
    synth.write(spec, path, dtype)
    r = ReferenceModel.from_gguf(path)
    assert r.dtypes["blk.0.attn_q.weight"] == dtype.upper() and r.dtypes["blk.0.attn_norm.weight"] == "F32"
    t = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}["blk.1.ffn_down.weight"]
    np.testing.assert_array_equal(r.w["blk.1.ffn_down.weight"].ravel(), quants.dequantize(t.data, t.tensor_type).ravel())
    # close to the float weights, not equal
    err = normwise_error(r.w["blk.1.ffn_down.weight"].ravel(), spec.weights["blk.1.ffn_down.weight"].ravel())
    assert 0 < err < {"q8_0": 0.01, "q4_0": 0.2, "q4_k": 0.1}[dtype]


def test_activation_quantizers(rng):
    from gguf import quants
    from gguf.constants import GGMLQuantizationType as Q

    x = (rng.standard_normal((3, 256)) * rng.uniform(0.1, 10, (3, 1))).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero block
    # Q8_0: the gguf package's quantizer then dequantizer, bit for bit
    want = quants.dequantize(quants.quantize(x, Q.Q8_0), Q.Q8_0)
    np.testing.assert_array_equal(quantize_act_q8_0(x), want.astype(np.float64))
    # Q8_K: 256-blocks, the element of largest |x| is represented exactly (q = -127)
    y = quantize_act_q8_k(x)
    i = np.argmax(np.abs(x), axis=1)
    np.testing.assert_allclose(y[np.arange(3), i], x[np.arange(3), i], rtol=1e-6)
    assert np.all(np.abs(y - x) <= np.abs(x).max(axis=1, keepdims=True) / 127 * 0.5 * (1 + 1e-5))


# ----------------------------------------------------------------------------- HF architectures

def _hf(tmp_path, arch, seed, **kw):
    return hf_synth.make_hf_model(tmp_path / arch, arch, seed=seed, **kw)


@pytest.mark.parametrize("arch,neox", [(a, False) for a in hf_synth.ARCHS] + [("llama", True), ("mistral", True)])
def test_hf_naming_path_equals_gguf_naming_path(arch, neox, tmp_path, seed, rng):
    """The HF folder read with HF names and semantics (reference/hf.py) and the same model as
    llama.cpp's converter would write it (gguf package; Gemma norms + 1, LLaMA q/k permuted to
    adjacent pairs or kept with `torchless.rope.neox`) give the same logits and options."""
    m = _hf(tmp_path, arch, seed)
    path = tmp_path / f"{arch}.gguf"
    hf_synth.to_gguf(m, path, neox_override=neox)
    g = ReferenceModel.from_gguf(path)
    h = ReferenceModel.from_hf(m["path"])
    a, b = g.config, h.config
    assert a.arch == b.arch and a.rope_style == ("norm" if arch in ("llama", "mistral") and not neox else b.rope_style)
    for k in ("n_vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim", "act", "post_norms",
              "qk_norm", "tied_embeddings", "sliding_window", "attn_softcap", "final_softcap"):
        assert getattr(a, k) == getattr(b, k), k
    for k in ("embed_scale", "rope_theta", "norm_eps", "rope_attn_factor"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-6), k
    assert (a.attn_scale or a.head_dim ** -0.5) == pytest.approx(b.attn_scale or b.head_dim ** -0.5, rel=1e-6)
    assert [a.windowed(l) for l in range(a.n_layers)] == [b.windowed(l) for l in range(b.n_layers)]
    if any(a.windowed(l) for l in range(a.n_layers)):
        assert a.swa_rope()[0] == pytest.approx(b.swa_rope()[0]) and a.swa_rope()[1] == b.swa_rope()[1]
    toks = rng.integers(0, a.n_vocab, 20)
    # float32 storage of 1 + w (Gemma) and of the llama3 divisors: each a rounding of 2^-24 ≈ 6e-8,
    # a few of them through the layers (largest seen over 480 seeded models: 6.6e-8, Gemma 2)
    assert normwise_error(g.forward(toks), h.forward(toks)).max() <= 2e-7


@pytest.mark.parametrize("arch", hf_synth.ARCHS)
def test_config_schemas_4_and_5_agree(arch, tmp_path, seed):
    a = _hf(tmp_path / "4", arch, seed, schema=4)
    b = _hf(tmp_path / "5", arch, seed, schema=5, sharded=True)
    assert "rope_parameters" not in a["config"] and "rope_parameters" in b["config"]
    ca, cb = hf.config_from_hf(a["config"]), hf.config_from_hf(b["config"])
    assert [ca.windowed(l) for l in range(ca.n_layers)] == [cb.windowed(l) for l in range(cb.n_layers)]
    assert ca == dataclasses.replace(cb, swa_pattern=ca.swa_pattern)
    ra, rb = ReferenceModel.from_hf(a["path"]), ReferenceModel.from_hf(b["path"])   # sharded read
    assert ra.w.keys() == rb.w.keys() and all(np.array_equal(ra.w[k], rb.w[k]) for k in ra.w)


@pytest.mark.parametrize("arch", hf_synth.ARCHS)
def test_hf_prefill_equals_incremental_decode(arch, tmp_path, seed, rng):
    m = _hf(tmp_path, arch, seed)
    r = ReferenceModel.from_hf(m["config"], m["state_dict"])
    toks = list(rng.integers(0, r.config.n_vocab, 20))
    full, inc = _prefill_vs_decode(r, toks, [1] * 20)
    assert normwise_error(inc, full).max() <= 1e-12
    full, inc = _prefill_vs_decode(r, toks, [5, 1, 9, 1, 4])
    assert normwise_error(inc, full).max() <= 1e-12


@pytest.mark.parametrize("arch", ["mistral", "gemma2", "gemma3"])
def test_window_at_least_the_sequence_equals_no_window(arch, tmp_path, seed, rng):
    m = _hf(tmp_path, arch, seed)
    r = ReferenceModel.from_hf(m["config"], m["state_dict"])
    c = r.config
    T = 16
    toks = rng.integers(0, c.n_vocab, T)
    none = ReferenceModel(dataclasses.replace(c, sliding_window=0), r.w).forward(toks)
    for w in (T, T + 5):
        got = ReferenceModel(dataclasses.replace(c, sliding_window=w), r.w).forward(toks)
        assert normwise_error(got, none).max() <= 1e-13, w
    # and a shorter window changes exactly the rows past it
    got = ReferenceModel(dataclasses.replace(c, sliding_window=T - 4), r.w).forward(toks)
    err = normwise_error(got, none)
    assert err[:T - 4].max() <= 1e-13 and err[T - 4:].min() > 1e-4


# (arch, option, value): each must move the logits of 24 positions by > 1e-3 somewhere
SENSITIVE = [("llama", "rope_style", "norm"), ("llama", "rope_scaling", "none"), ("mistral", "sliding_window", 0),
             ("gemma", "embed_scale", 0.0), ("gemma", "act", "silu"), ("gemma2", "attn_softcap", 0.0),
             ("gemma2", "final_softcap", 0.0), ("gemma2", "attn_scale", 0.0), ("gemma2", "post_norms", False),
             ("gemma2", "swa_pattern", 1), ("gemma3", "rope_theta_swa", 1e6), ("gemma3", "rope_scaling_swa", "linear"),
             ("gemma3", "rope_scaling", "none"), ("gemma3", "swa_pattern", 2), ("gemma3", "attn_scale", 0.0),
             ("phi3", "rope_attn_factor", 1.0), ("phi3", "rope_long", True), ("qwen3", "qk_norm", False)]


@pytest.mark.parametrize("arch,option,value", SENSITIVE, ids=[f"{a}-{o}" for a, o, _ in SENSITIVE])
def test_every_option_changes_the_logits(arch, option, value, tmp_path, seed, rng):
    m = _hf(tmp_path, arch, seed)
    r = ReferenceModel.from_hf(m["config"], m["state_dict"])
    toks = rng.integers(0, r.config.n_vocab, 24)
    other = ReferenceModel(dataclasses.replace(r.config, **{option: value}), r.w)
    assert normwise_error(other.forward(toks), r.forward(toks)).max() > 1e-3


def test_windowed_layers_follow_the_pattern():
    c = Config(arch="gemma2", n_layers=5, sliding_window=8)
    assert [c.windowed(l) for l in range(5)] == [True, False, True, False, True]
    c = Config(arch="gemma3", n_layers=12, sliding_window=8)
    assert [l for l in range(12) if not c.windowed(l)] == [5, 11]
    c = Config(arch="llama", n_layers=3, sliding_window=8)
    assert all(c.windowed(l) for l in range(3))
    c = Config(arch="llama", n_layers=4, sliding_window=8, swa_pattern=4)
    assert [c.windowed(l) for l in range(4)] == [True, True, True, False]
    c = Config(arch="llama", n_layers=3, sliding_window=8, swa_pattern=[0, 1, 0])
    assert [c.windowed(l) for l in range(3)] == [False, True, False]
    assert not Config(arch="llama", n_layers=2).windowed(0)       # no window set
    assert Config(arch="gemma3", n_layers=2).windowed(0)          # gemma3: a local layer (RoPE) without a window


def test_longrope_switches_to_long_factors_past_the_original_context(tmp_path, seed, rng):
    m = _hf(tmp_path, "phi3", seed)
    r = ReferenceModel.from_hf(m["config"], m["state_dict"])
    c = r.config
    assert c.rope_orig_ctx == 64 and c.rope_attn_factor == pytest.approx(math.sqrt(1 + math.log(4) / math.log(64)))
    toks = rng.integers(0, c.n_vocab, 70)
    short = ReferenceModel(dataclasses.replace(c, rope_long=False), r.w)
    long = ReferenceModel(dataclasses.replace(c, rope_long=True), r.w)
    assert np.array_equal(r.forward(toks[:64]), short.forward(toks[:64]))
    r.reset()
    assert np.array_equal(r.forward(toks), long.forward(toks))
    assert longrope_attn_factor(64, 64) == 1.0 and longrope_attn_factor(32, 64) == 1.0


def test_gelu_tanh_and_softcap_values():
    # GELU tanh approximation: 0.5·x·(1 + tanh(sqrt(2/pi)·(x + 0.044715·x³)))
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    want = [-0.0036373920817729943, -0.15880800939172324, 0.0, 0.34571400982514394, 0.8411919906082768,
            2.996362607918227]
    np.testing.assert_allclose(gelu_tanh(x), want, rtol=1e-14)
    np.testing.assert_allclose(softcap(np.array([0.0, 1.0, 100.0]), 30.0), [0.0, 30 * np.tanh(1 / 30), 30 * np.tanh(100 / 30)])
    assert np.array_equal(softcap(x, 0.0), x)


def test_hf_gemma_norms_get_one_added_and_others_do_not(tmp_path, seed):
    for arch in ("gemma3", "qwen3"):
        m = _hf(tmp_path, arch, seed)
        c, w = hf.from_hf(m["config"], m["state_dict"])
        add = 1.0 if arch == "gemma3" else 0.0
        sd = m["state_dict"]
        for hf_name, g in (("model.norm.weight", "output_norm.weight"),
                           ("model.layers.1.input_layernorm.weight", "blk.1.attn_norm.weight"),
                           ("model.layers.1.self_attn.q_norm.weight", "blk.1.attn_q_norm.weight"),
                           ("model.layers.1.self_attn.k_norm.weight", "blk.1.attn_k_norm.weight")):
            assert np.array_equal(w[g], sd[hf_name] + add), (arch, g)
        assert np.array_equal(w["blk.0.attn_q.weight"], sd["model.layers.0.self_attn.q_proj.weight"])
    # gemma2/3: post_attention_layernorm is the post-attention norm, pre_feedforward the FFN norm
    assert hf.hf_to_gguf_name("model.layers.2.post_attention_layernorm.weight", "gemma2") == "blk.2.post_attention_norm.weight"
    assert hf.hf_to_gguf_name("model.layers.2.pre_feedforward_layernorm.weight", "gemma3") == "blk.2.ffn_norm.weight"
    assert hf.hf_to_gguf_name("model.layers.2.post_feedforward_layernorm.weight", "gemma3") == "blk.2.post_ffw_norm.weight"
    assert hf.hf_to_gguf_name("model.layers.2.post_attention_layernorm.weight", "llama") == "blk.2.ffn_norm.weight"


def test_llama_cpp_permute_inverts_the_rotate_half_permutation(rng):
    """llama.cpp's LlamaModel.permute (HF rotate-half rows → adjacent pairs) undoes
    synth.permute_for_neox (adjacent pairs → rotate-half), per head, for q (4 heads) and k (2)."""
    for n_heads in (4, 2):
        w = rng.standard_normal((n_heads * 16, 8))
        np.testing.assert_array_equal(hf.permute_rotate_half_to_pairs(synth.permute_for_neox(w, n_heads, 16), n_heads), w)
        assert not np.array_equal(hf.permute_rotate_half_to_pairs(w, n_heads), w)


def test_bf16_rounding_matches_gguf_package(rng):
    from gguf import quants
    from gguf.constants import GGMLQuantizationType as Q

    x = (rng.standard_normal(4096) * np.exp(rng.uniform(-20, 20, 4096))).astype(np.float32)
    x[:4] = [0.0, -0.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8]     # ties: to even
    want = np.frombuffer(quants.quantize(x, Q.BF16).tobytes(), np.uint16)
    np.testing.assert_array_equal(hf.f32_to_bf16(x), want)
    assert hf.bf16_to_f32(hf.f32_to_bf16(x))[2] == 1.0 and hf.bf16_to_f32(hf.f32_to_bf16(x))[3] == 1.0 + 2.0 ** -6


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_safetensors_reader_matches_safetensors_package(dtype, tmp_path, rng):
    from safetensors.numpy import load_file

    t = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b.c": rng.standard_normal(7).astype(np.float32)}
    stored = hf_synth.write_safetensors(tmp_path / "m.safetensors", t, dtype)
    got = hf.read_safetensors(tmp_path / "m.safetensors")
    assert got.keys() == t.keys()
    for k in t:
        assert np.array_equal(got[k], stored[k])
        if dtype != "bf16":           # the package's NumPy API has no bfloat16
            assert np.array_equal(got[k], load_file(tmp_path / "m.safetensors")[k].astype(np.float64))
        else:
            assert 0 < np.abs(got[k] - t[k]).max() <= np.abs(t[k]).max() * 2.0 ** -8
