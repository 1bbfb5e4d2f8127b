"""transformers as the oracle: tiny random models built and saved by transformers itself.

For each architecture a model is built with transformers (`XxxConfig(...)`,
`XxxForCausalLM(config)`, parameters drawn from a seeded torch generator so activations are
O(1), not the 0.02-std init), saved with `save_pretrained(safe_serialization=True)` beside a
tokenizer built locally with `tokenizers` (no hub), and its teacher-forced logits over 64
positions (float32, eager attention) are compared with
  (a) the float64 NumPy reference reading the saved folder (tests/reference/hf.py): normwise
      ≤ 1e-4 (float32 against float64: measured about 1e-6);
  (b) torchless loading the folder (F32 weights, F32 KV cache): normwise ≤ 1e-4, and the same
      model converted to GGUF as llama.cpp's converter would (reference/hf_synth.to_gguf);
and the tokenizer ids of tests/data/tokenizer_corpus.json: transformers (AutoTokenizer) =
`tokenizers` = torchless.

Needs torch and transformers (the GPU machine has them; run
`python -m pytest -q tests/test_hf_transformers.py`); skipped with a message otherwise. The
torchless comparisons skip only when torchless is not installed or the build says it cannot
read the model (no HF reader yet, architecture not supported yet).

Measured (torch 2.15.0 CPU; transformers 5.24.0, 5.17.0 and 4.53.3, i.e. both config schemas as
save_pretrained writes them): reference vs transformers 2e-7 .. 1.4e-6 on every case, and
torchless (arch branch) from the converted GGUF 2e-7 .. 7e-7; each option the reference implements (window, soft-caps, attention scale, post norms,
local RoPE base, rope scaling on global layers only, LongRoPE factors and magnitude, embedding
scale, GELU) moves that error to 2e-2 .. 3 when switched off.
"""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the transformers oracle runs where it is")
transformers = pytest.importorskip("transformers", reason="transformers is not installed: the transformers oracle runs where it is")

from reference import hf_synth  # noqa: E402
from reference.forward import ReferenceModel, normwise_error  # noqa: E402

TOL = 1e-4
N_POS = 64
CORPUS = Path(__file__).resolve().parent / "data" / "tokenizer_corpus.json"
SCHEMA = 5 if int(transformers.__version__.split(".")[0]) >= 5 else 4

_CLASSES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
            "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
            "gemma": ("GemmaConfig", "GemmaForCausalLM"), "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
            "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"), "phi3": ("Phi3Config", "Phi3ForCausalLM")}
# phi3-long: original context 32 < 64 positions, so transformers (and llama.cpp with a context
# past the original one) use the long factors
CASES = hf_synth.ARCHS + ["phi3-long"]


def _randomize(model, arch: str, seed: int):
    """Parameters from a seeded generator: linear N(0, 1/fan_in), embeddings N(0, 1), norms
    1 + N(0, 0.1²) (Gemma: the HF weight w ~ N(0, 0.1²), used as 1 + w), biases N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "embed_tokens" in name:
                p.copy_(r)
            elif p.ndim == 2:
                p.copy_(r / p.shape[1] ** 0.5)
            elif "norm" in name:
                p.copy_(0.1 * r + (0.0 if arch.startswith("gemma") else 1.0))
            else:
                p.copy_(0.1 * r)


def build(case: str, folder: Path, seed: int):
    """Save a transformers model of `case` and its tokenizer in `folder`; returns
    (model, tokenizers.Tokenizer, token ids)."""
    arch = "phi3" if case == "phi3-long" else case
    tok, tok_cfg, ids = hf_synth.build_tokenizer(hf_synth._TOKENIZER[arch])
    n_vocab = tok.get_vocab_size(with_added_tokens=True) + (9 if arch == "phi3" else 0)
    d = hf_synth.hf_config(arch, n_vocab, ids, schema=SCHEMA, rng=np.random.default_rng(seed))
    if case == "phi3-long":
        d["original_max_position_embeddings"] = 32
        if "rope_parameters" in d:
            d["rope_parameters"]["original_max_position_embeddings"] = 32
    for k in ("architectures", "model_type", "transformers_version", "torch_dtype", "dtype"):
        d.pop(k, None)
    cfg_cls, model_cls = (getattr(transformers, n) for n in _CLASSES[arch])
    config = cfg_cls(**d, attn_implementation="eager")
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    _randomize(model, arch, seed)
    model.save_pretrained(folder, safe_serialization=True)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, **{k: v for k, v in tok_cfg.items()
                                 if k in ("bos_token", "eos_token", "pad_token", "unk_token") and v})
    fast.chat_template = tok_cfg["chat_template"]
    fast.save_pretrained(folder)
    return model, tok, ids


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = {}

    def get(case, seed):
        if case not in cache:
            folder = tmp_path_factory.mktemp(case)
            cache[case] = (folder, *build(case, folder, seed))
        return cache[case]
    return get


def _tokens(rng, ids, n_vocab_tok):
    bos = ids["bos"]
    toks = list(rng.integers(0, n_vocab_tok, N_POS))
    if bos is not None:
        toks[0] = bos
    return [int(t) for t in toks]


def _hf_logits(model, toks):
    with torch.no_grad():
        out = model(torch.tensor([toks]), use_cache=False)
    return out.logits[0].double().numpy()


def _check(got, want, what):
    err = normwise_error(got, want)
    assert np.all(np.isfinite(got)), f"{what}: non-finite logits"
    assert err.max() <= TOL, f"{what}: normwise error {err.max():.3g} at row {int(np.argmax(err))} > {TOL:g}"
    return err.max()


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_transformers(case, built, seed, rng):
    folder, model, tok, ids = built(case, seed)
    toks = _tokens(rng, ids, tok.get_vocab_size(with_added_tokens=True))
    want = _hf_logits(model, toks)
    ref = ReferenceModel.from_hf(folder)
    got = ref.forward(toks)
    err = _check(got, want, f"{case}: reference vs transformers")
    print(f"{case}: reference vs transformers normwise {err:.2e}")
    # the GGUF-order path (llama: q/k un-permuted to adjacent pairs, NORM RoPE) agrees too
    if case in ("llama", "mistral"):
        got2 = ReferenceModel.from_hf(folder, gguf_order=True).forward(toks)
        _check(got2, want, f"{case}: reference (GGUF order) vs transformers")


# what a build says when it has no HF reader (handed a folder) or lacks an architecture (GGUF)
_UNSUPPORTED = ("not a regular file", "folders are not supported", "folder is not supported", "is not supported yet")


def _torchless_model(path):
    """torchless.Model on `path` (F32 KV cache, max_seq_len 64); skipped only when torchless is
    not installed or the build itself says it cannot read this kind of model."""
    torchless = pytest.importorskip("torchless", reason="torchless is not installed here")
    try:
        return torchless.Model(str(path), max_seq_len=N_POS, kv_dtype="f32")
    except (OSError, ValueError) as e:
        if any(s in str(e) for s in _UNSUPPORTED):
            pytest.skip(f"this torchless build cannot load {Path(path).name} (it says: {e})")
        raise


@pytest.mark.parametrize("case", CASES)
def test_torchless_matches_transformers(case, built, seed, rng):
    folder, model, tok, ids = built(case, seed)
    toks = _tokens(rng, ids, tok.get_vocab_size(with_added_tokens=True))
    want = _hf_logits(model, toks)
    m = _torchless_model(folder)
    got = m.forward(toks, 0, 0)
    assert got.shape == want.shape
    err = _check(got, want, f"{case}: torchless vs transformers")
    print(f"{case}: torchless vs transformers normwise {err:.2e}")


GPU_TOL = 2e-3  # the GPU's prefill multiplies F16 activations (cuBLAS), the bound for F16


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_torchless_on_a_gpu_matches_transformers(case, built, seed, rng):
    """The same folder on the first GPU torchless finds: a prefill of 56 positions (the GEMM
    path), then 8 single tokens (the GEMV path, replayed as a recorded graph)."""
    torchless = pytest.importorskip("torchless", reason="torchless is not installed here")
    gpus = [f"{d['backend']}:{d['index']}" for d in torchless.backends() if d["backend"] != "cpu"]
    if not gpus:
        pytest.skip("no GPU device found (torchless.backends() lists only the CPU)")
    folder, model, tok, ids = built(case, seed)
    toks = _tokens(rng, ids, tok.get_vocab_size(with_added_tokens=True))
    want = _hf_logits(model, toks)
    m = torchless.Model(str(folder), max_seq_len=N_POS, kv_dtype="f16", device=gpus[0])
    got = [m.forward(toks[:56], 0, 0)] + [m.forward(toks[p:p + 1], p, 0) for p in range(56, N_POS)]
    got = np.concatenate(got)
    err = normwise_error(got, want)
    print(f"{case}: torchless on {gpus[0]} vs transformers normwise {err.max():.2e}")
    assert err.max() <= GPU_TOL, f"{case}: normwise error {err.max():.3g} at row {int(np.argmax(err))} > {GPU_TOL:g}"


@pytest.mark.parametrize("case", CASES)
def test_torchless_gguf_matches_transformers(case, built, seed, rng, tmp_path):
    """The transformers model as llama.cpp's converter would write it (reference/hf_synth.to_gguf,
    with the gguf package), run by torchless."""
    pytest.importorskip("gguf", reason="the gguf package (to write the GGUF file) is not installed")
    from reference import hf

    folder, model, tok, ids = built(case, seed)
    cfg, sd = hf.read_folder(folder)
    path = tmp_path / f"{case}.gguf"
    hf_synth.to_gguf({"config": cfg, "state_dict": sd, "arch": case}, path)
    toks = _tokens(rng, ids, tok.get_vocab_size(with_added_tokens=True))
    want = _hf_logits(model, toks)
    got = _torchless_model(path).forward(toks, 0, 0)
    err = _check(got, want, f"{case}: torchless (GGUF) vs transformers")
    print(f"{case}: torchless (GGUF) vs transformers normwise {err:.2e}")


@pytest.mark.parametrize("case", ["llama", "mistral", "qwen2", "gemma", "phi3"])
def test_tokenizer_ids_match_transformers(case, built, seed):
    import tokenizers

    folder, model, tok, ids = built(case, seed)
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))
    raw = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    texts = json.loads(CORPUS.read_text())
    for text in texts:
        assert raw.encode(text).ids == auto(text)["input_ids"], f"{case}: tokenizers and transformers disagree on {text!r}"
    ours = _torchless_model(folder).tokenizer          # special tokens in the text parsed, as transformers does
    bad = [(t, ours.encode(t, special=True), auto(t)["input_ids"]) for t in texts
           if ours.encode(t, special=True) != auto(t)["input_ids"]]
    assert not bad, f"{case}: {len(bad)} of {len(texts)} texts differ; first (text, torchless, transformers): {bad[0]!r}"
