"""Hugging Face folders in torchless against the float64 reference (tests/reference/).

Every architecture's tiny random folder (reference/hf_synth.py: config.json, safetensors,
tokenizer.json, tokenizer_config.json, generation_config.json) loads with `torchless.Model`,
and its teacher-forced logits (12 positions of prefill, then 4 single-token decodes, so the
window-8 layers slide in both paths) match the reference reading the same HF-named weights
(reference/hf.py: HF names and semantics → GGUF names and semantics):
- F32 weights, F32 KV cache: normwise ≤ 1e-4 (float32 against float64; a wrong RoPE order,
  norm offset, window, soft-cap, scale or LongRoPE factor costs 1e-2 to 1, see
  test_reference_self.py and the sensitivity notes in test_hf_transformers.py);
- BF16 and F16 folders: the reference runs on the rounded weights (what the file holds), so
  the same bound.
Both config schemas (transformers 4 and 5) and a sharded folder are read. Tokenizer ids of
tests/data/tokenizer_corpus.json equal those of the `tokenizers` package on the same
tokenizer.json; generation_config.json's eos ids end generation.

Until the HF reader lands, the build answers a folder with "not a regular file": the tests are
then skipped with that message, and only then.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import torchless
from reference import hf_synth
from reference.forward import ReferenceModel, normwise_error

TOL = 1e-4
N_PREFILL, N_DECODE = 12, 4
CORPUS = Path(__file__).resolve().parent / "data" / "tokenizer_corpus.json"
# what a build without the HF reader says when handed a folder (and what a reader that refuses
# folders outright should say); any other error from the probe is a failure, not a skip
_NO_HF_READER = ("not a regular file", "folders are not supported", "folder is not supported")


@pytest.fixture(scope="module")
def hf_support(tmp_path_factory):
    """None when this build loads HF folders, else the build's own message."""
    m = hf_synth.make_hf_model(tmp_path_factory.mktemp("probe"), "llama", seed=0)
    try:
        torchless.Model(str(m["path"]), max_seq_len=16, kv_dtype="f32")
    except (OSError, ValueError) as e:
        if any(s in str(e) for s in _NO_HF_READER):
            return str(e)
        raise
    return None


def engine(folder, hf_support):
    if hf_support is not None:
        pytest.skip(f"this torchless build does not load Hugging Face folders (it says: {hf_support})")
    # max_seq_len = phi3's original context (64): LongRoPE short factors in both engines
    return torchless.Model(str(folder), max_seq_len=64, kv_dtype="f32")


def check(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite logits"
    err = normwise_error(got, want)
    assert err.max() <= TOL, (f"{what}: normwise error {err.max():.3g} at row {int(np.argmax(err))} > {TOL:g} "
                              f"(rows: {np.array2string(err, precision=2)})")


def run_and_compare(m, hf, rng, what):
    ref = ReferenceModel.from_hf(hf["config"], hf["state_dict"])
    c = ref.config
    n_tok = hf["n_tokenizer_vocab"]
    toks = [int(t) for t in rng.integers(0, n_tok, N_PREFILL + N_DECODE)]
    if hf["token_ids"]["bos"] is not None:
        toks[0] = hf["token_ids"]["bos"]
    assert m.config["n_vocab"] == c.n_vocab, f"{what}: n_vocab {m.config['n_vocab']} != {c.n_vocab}"
    for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim"):
        assert m.config[k] == getattr(c, k), f"{what}: config[{k!r}] = {m.config[k]!r}, reference {getattr(c, k)!r}"
    # the architecture traits, where the build reports them
    want = {"sliding_window": c.sliding_window, "attn_softcap": c.attn_softcap, "final_softcap": c.final_softcap,
            "attn_scale": c.attn_scale or c.head_dim ** -0.5, "embed_scale": c.embed_scale or 1.0,
            "n_windowed_layers": sum(c.windowed(l) for l in range(c.n_layers)) if c.sliding_window else 0}
    for k, v in want.items():
        if k in m.config:
            assert m.config[k] == pytest.approx(v, rel=1e-6), f"{what}: config[{k!r}] = {m.config[k]!r}, reference {v!r}"
    check(m.forward(toks[:N_PREFILL], 0, 0), ref.forward(toks[:N_PREFILL], 0), f"{what} prefill")
    for i in range(N_PREFILL, N_PREFILL + N_DECODE):
        check(m.forward([toks[i]], i, 0), ref.forward([toks[i]], i), f"{what} decode at {i}")


@pytest.mark.parametrize("arch", hf_synth.ARCHS)
def test_f32_folder_matches_reference(arch, tmp_path, seed, rng, hf_support):
    hf = hf_synth.make_hf_model(tmp_path / arch, arch, seed=seed, dtype="f32", schema=4)
    run_and_compare(engine(hf["path"], hf_support), hf, rng, f"{arch} f32 schema 4")


@pytest.mark.parametrize("arch", hf_synth.ARCHS)
def test_transformers5_schema_sharded_folder_matches_reference(arch, tmp_path, seed, rng, hf_support):
    hf = hf_synth.make_hf_model(tmp_path / arch, arch, seed=seed, dtype="f32", schema=5, sharded=True)
    assert (hf["path"] / "model.safetensors.index.json").exists()
    run_and_compare(engine(hf["path"], hf_support), hf, rng, f"{arch} f32 schema 5 sharded")


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
@pytest.mark.parametrize("arch", hf_synth.ARCHS)
def test_half_precision_folder_matches_reference_on_rounded_weights(arch, dtype, tmp_path, seed, rng, hf_support):
    hf = hf_synth.make_hf_model(tmp_path / arch, arch, seed=seed, dtype=dtype, schema=4)
    run_and_compare(engine(hf["path"], hf_support), hf, rng, f"{arch} {dtype}")


@pytest.mark.parametrize("arch,neox", [(a, False) for a in hf_synth.ARCHS] + [("llama", True), ("mistral", True)])
def test_gguf_of_hf_model_matches_reference(arch, neox, tmp_path, seed, rng):
    """The same models as llama.cpp's converter would write them (reference/hf_synth.to_gguf,
    with the `gguf` package: Gemma norms + 1, LLaMA q/k permuted to adjacent pairs, or kept in
    rotate-half order with `torchless.rope.neox`), run from GGUF against the reference reading
    the HF-named weights. Skipped only when the build says the architecture is not supported."""
    hf = hf_synth.make_hf_model(tmp_path / arch, arch, seed=seed)
    path = tmp_path / f"{arch}.gguf"
    hf_synth.to_gguf(hf, path, neox_override=neox)
    try:
        m = torchless.Model(str(path), max_seq_len=64, kv_dtype="f32")
    except ValueError as e:
        if "is not supported yet" in str(e):
            pytest.skip(f"this torchless build does not run {arch} (it says: {e})")
        raise
    if (arch == "mistral" or neox) and "sliding_window" not in m.config:
        pytest.skip("this torchless build predates the architecture traits (its config reports no "
                    "'sliding_window'): it runs llama GGUFs without the window or `torchless.rope.neox`")
    run_and_compare(m, hf, rng, f"{arch} GGUF{' (rope.neox)' if neox else ''}")


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma", "phi3"])
def test_folder_tokenizer_matches_tokenizers_package(arch, tmp_path, seed, hf_support):
    import tokenizers

    hf = hf_synth.make_hf_model(tmp_path / arch, arch, seed=seed)
    m = engine(hf["path"], hf_support)
    want_tok = tokenizers.Tokenizer.from_file(str(hf["path"] / "tokenizer.json"))
    tok = m.tokenizer
    texts = json.loads(CORPUS.read_text())
    # special tokens in the text parsed (the `tokenizers`/transformers default), BOS as configured
    bad = [t for t in texts if tok.encode(t, special=True) != want_tok.encode(t).ids]
    assert not bad, (f"{arch}: {len(bad)} corpus texts tokenize differently, first {bad[0]!r}: "
                     f"{tok.encode(bad[0], special=True)} != {want_tok.encode(bad[0]).ids}")
    # special tokens in the text taken as plain text, no BOS
    want_tok.encode_special_tokens = True
    bad = [t for t in texts if tok.encode(t, add_bos=False) != want_tok.encode(t, add_special_tokens=False).ids]
    assert not bad, (f"{arch}: {len(bad)} corpus texts tokenize differently as plain text, first {bad[0]!r}: "
                     f"{tok.encode(bad[0], add_bos=False)} != {want_tok.encode(bad[0], add_special_tokens=False).ids}")
    # every eos id of generation_config.json ends generation
    eos = hf["generation_config"]["eos_token_id"]
    for i in eos if isinstance(eos, list) else [eos]:
        assert tok.is_eog(i), f"{arch}: generation_config eos id {i} does not end generation"


def test_probe_sees_the_folder(tmp_path, seed):
    """The folder the probe loads is complete and readable by the reference (so a skip above
    is about torchless, never about the synthetic folder)."""
    hf = hf_synth.make_hf_model(tmp_path / "llama", "llama", seed=seed)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (hf["path"] / f).is_file(), f
    r = ReferenceModel.from_hf(hf["path"])
    assert r.forward([1, 2, 3]).shape == (3, hf["config"]["vocab_size"])
