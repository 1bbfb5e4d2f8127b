"""`torchless convert` / `torchless quantize` and torchless.convert: llama.cpp's quantization
mixes, streamed to GGUF.

The expected tensor types are written out here from llama.cpp `src/llama-quant.cpp`
(llama_tensor_get_type_impl, use_more_bits, tensor_type_fallback), not computed by the code under
test; the planner is also checked against two files llama.cpp wrote (the packaged SmolLM2 Q4_1
and Gemma 3 270M Q4_K_M). Converted files are read back with the `gguf` package.

Bounds:
- every converted tensor is bit-identical to `torchless.quantize` of the source's float32 values
  (conversion adds nothing of its own), and its normwise error against the source, decoded by
  the `gguf` package, is under the format's bound (Gaussian rows; the K-quant bounds are
  tests/test_quants.py's, the others measured on 4096-column rows with ~20% margin for our
  smaller tensors);
- logits of the converted model in the engine against the float64 reference on the same
  dequantized weights: 1e-4 normwise (5e-2 when the engine quantizes activations: one input
  element rounding to the other quantum than in the reference), as in tests/test_forward.py.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import quants as gguf_quants  # noqa: E402

import torchless  # noqa: E402
from reference import synth  # noqa: E402
from reference.forward import ReferenceModel, normwise_error  # noqa: E402
from torchless import cli  # noqa: E402

conv = sys.modules["torchless.convert"]   # the module; torchless.convert is the function

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"]
# llama.cpp enum llama_ftype
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9,
             "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}
# normwise round-trip error bounds on N(0, s²) rows
BOUND = {"f32": 0.0, "f16": 5e-4, "bf16": 3e-3, "q8_0": 7e-3, "q4_0": 0.105, "q4_1": 0.095, "q5_0": 0.053,
         "q5_1": 0.047, "q4_k": 0.0765, "q5_k": 0.0387, "q6_k": 0.0190}
TOL = 1e-4
TOL_ACT = 5e-2

N_LAYERS = 8
MORE_BITS = {0, 3, 6, 7}   # use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2
HIDDEN = 320               # ffn_down rows of 320: not a multiple of 256, a multiple of 32


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def awkward_spec(rng, variant="llama"):
    """A LLaMA of 8 layers, dim 256 (K-quant rows) and FFN 320: ffn_down rows are not."""
    spec = synth.make(variant, rng, k_quant=True, n_layers=N_LAYERS)
    dim = spec.config.dim
    for l in range(N_LAYERS):
        p = f"blk.{l}."
        spec.weights[p + "ffn_gate.weight"] = (rng.standard_normal((HIDDEN, dim)) / np.sqrt(dim)).astype(np.float32)
        spec.weights[p + "ffn_up.weight"] = (rng.standard_normal((HIDDEN, dim)) / np.sqrt(dim)).astype(np.float32)
        spec.weights[p + "ffn_down.weight"] = (rng.standard_normal((dim, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
    spec.metadata[f"{spec.config.arch}.feed_forward_length"] = torchless.gguf.Value(HIDDEN, "uint32")
    spec.config.hidden_dim = HIDDEN
    return spec


@pytest.fixture
def awkward(tmp_path, rng):
    spec = awkward_spec(rng)
    path = tmp_path / "awkward-f32.gguf"
    synth.write(spec, path, "f32")
    return spec, path


def expected_type(name: str, shape, mix: str, tied: bool = False) -> str:
    """llama.cpp's choice for the awkward model (rows 256 everywhere but ffn_down's 320)."""
    if len(shape) == 1:
        return "f32"
    if mix in ("f32", "f16", "bf16"):
        return mix
    base = {"q4_k_s": "q4_k", "q4_k_m": "q4_k", "q5_k_s": "q5_k", "q5_k_m": "q5_k"}.get(mix, mix)
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "q8_0" if base == "q8_0" else "q6_k"     # rows of 256 fit every block
    if name == "token_embd.weight":
        return base
    layer = int(name.split(".")[1])
    t = base
    if name.endswith("attn_v.weight"):
        if mix in ("q4_k_m", "q5_k_m") and layer in MORE_BITS:
            t = "q6_k"
        elif mix == "q4_k_s" and layer < 4:
            t = "q5_k"
    if "ffn_down" in name:
        if mix in ("q4_k_m", "q5_k_m") and layer in MORE_BITS:
            t = "q6_k"
        elif mix == "q4_k_s" and layer < 1:
            t = "q5_k"
        t = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}.get(t, t)   # 320 % 256 != 0
    return t


def read(path):
    """{name: (dtype name, raw uint8 blocks, shape in NumPy order)}, metadata fields."""
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[t.name] = (t.tensor_type.name.lower(), t.data, shape)
    return out, r


def engine_vs_reference(path, rng, n_vocab):
    m = torchless.Model(str(path), max_seq_len=64, kv_dtype="f32")
    aq = m.config.get("activation_quant", False)
    aq = frozenset(aq) if isinstance(aq, (list, tuple)) else bool(aq)
    ref = ReferenceModel.from_gguf(path, act_quant=aq or False)
    toks = [int(t) for t in rng.integers(0, n_vocab, 8)]
    err = normwise_error(m.forward(toks, 0, 0), ref.forward(toks, 0))
    return float(err.max()), (TOL_ACT if aq else TOL)


# --------------------------------------------------------------------------- every mix


@pytest.mark.parametrize("mix", TYPES)
def test_convert_writes_llama_cpp_mix(mix, awkward, tmp_path, rng):
    spec, src = awkward
    out = tmp_path / f"out-{mix}.gguf"
    report = torchless.convert(src, out, mix, progress=False)
    tensors, reader = read(out)
    assert list(tensors) == list(spec.weights)
    assert reader.fields["general.file_type"].contents() == FILE_TYPE[mix]
    assert reader.fields["general.quantization_version"].contents() == 2
    assert reader.fields["general.name"].contents() == "synthetic-llama"
    assert reader.fields["tokenizer.ggml.tokens"].contents() == synth.vocabulary()[0]
    for name, (dtype, data, shape) in tensors.items():
        want = expected_type(name, shape, mix)
        assert dtype == want, f"{mix}: {name} {shape} is {dtype}, llama.cpp would write {want}"
        x = spec.weights[name]
        assert shape == x.shape
        # bit-identical to quantizing the source values, and within the format's error bound
        ref_bytes = x.astype(np.float32).view(np.uint8) if dtype == "f32" else torchless.quantize(x, dtype)
        assert np.array_equal(np.asarray(data).reshape(-1).view(np.uint8), ref_bytes.reshape(-1)), name
        y = gguf_quants.dequantize(data, gguf.GGMLQuantizationType[dtype.upper()]).reshape(shape)
        err = np.linalg.norm(y - x) / np.linalg.norm(x)
        assert err <= BOUND[dtype], f"{mix}: {name} ({dtype}) normwise error {err:.4g} > {BOUND[dtype]}"
    # the report says which fallbacks happened
    fb = {(g["from"], g["to"]): (g["tensors"], g["row_sizes"]) for g in report.fallbacks}
    want_fb = {"q4_k_m": {("q4_k", "q5_0"): 4, ("q6_k", "q8_0"): 4}, "q5_k_m": {("q5_k", "q5_1"): 4, ("q6_k", "q8_0"): 4},
               "q4_k_s": {("q4_k", "q5_0"): 7, ("q5_k", "q5_1"): 1}, "q5_k_s": {("q5_k", "q5_1"): 8},
               "q6_k": {("q6_k", "q8_0"): 8}}.get(mix, {})
    assert fb == {k: (n, [HIDDEN]) for k, n in want_fb.items()}
    assert report.n_tensors == len(spec.weights) and report.file_type == FILE_TYPE[mix]
    assert report.bytes_out == sum(np.asarray(d).nbytes for _, d, _ in tensors.values())
    # the engine runs it like the reference on the same weights
    err, tol = engine_vs_reference(out, rng, spec.config.n_vocab)
    assert err <= tol, f"{mix}: logits normwise error {err:.3g} > {tol}"


def test_tied_embeddings_take_the_output_rule(tmp_path, rng):
    """No output.weight: token_embd is quantized like the output head (Q6_K in k-mixes)."""
    spec = awkward_spec(rng, "llama-tied")
    src = tmp_path / "tied.gguf"
    synth.write(spec, src, "f32")
    for mix in ("q4_k_m", "q4_0", "q8_0"):
        out = tmp_path / f"tied-{mix}.gguf"
        torchless.convert(src, out, mix, progress=False)
        tensors, _ = read(out)
        assert "output.weight" not in tensors
        for name, (dtype, _, shape) in tensors.items():
            assert dtype == expected_type(name, shape, mix, tied=True), (mix, name, dtype)


def test_small_rows_fall_back_everywhere(tmp_path, rng):
    """dim 64 / FFN 160: no row fits a K-quant block. The tied embedding goes to Q8_0 by the
    output rule (not counted as a fallback, as in llama.cpp), the rest fall back."""
    spec = synth.make("llama-tied", rng, n_layers=8)
    src = tmp_path / "small.gguf"
    synth.write(spec, src, "f16")
    out = tmp_path / "small-q4_k_m.gguf"
    report = torchless.convert(src, out, "q4_k_m", progress=False)
    tensors, _ = read(out)
    for name, (dtype, _, shape) in tensors.items():
        if len(shape) == 1:
            want = "f32"
        elif name == "token_embd.weight":
            want = "q8_0"
        elif name.endswith(("attn_v.weight", "ffn_down.weight")) and int(name.split(".")[1]) in MORE_BITS:
            want = "q8_0"
        else:
            want = "q5_0"
        assert dtype == want, (name, dtype, want)
    fb = {(g["from"], g["to"]): (g["tensors"], g["row_sizes"]) for g in report.fallbacks}
    assert fb == {("q4_k", "q5_0"): (7 * 8 - 8, [64, 160]), ("q6_k", "q8_0"): (8, [64, 160])}
    err, tol = engine_vs_reference(out, rng, spec.config.n_vocab)
    assert err <= tol


def test_plan_keeps_odd_rows_and_vectors_in_float():
    """Rows that are not a multiple of 32 go to F16 (llama.cpp: F16 after a K fallback; it
    stops for the 32-blocks); F16/BF16 vectors are written F32; a (1, n) matrix is a vector
    (ggml_n_dims); rope factors and norms keep their type."""
    md = {"general.architecture": "llama", "llama.block_count": 1}
    tensors = [("token_embd.weight", "f16", (100, 96)), ("blk.0.attn_norm.weight", "bf16", (96,)),
               ("blk.0.ffn_down.weight", "f16", (96, 80)), ("blk.0.ffn_up.weight", "bf16", (80, 96)),
               ("rope_factors_long.weight", "f32", (24,)), ("blk.0.attn_q_norm.weight", "f32", (1, 64)),
               ("output.weight", "f32", (100, 96))]
    got = {p.name: (p.dst, p.fallback) for p in conv.plan_tensors(tensors, md, "q4_k_m")}
    assert got == {"token_embd.weight": ("q5_0", ("q4_k", "q5_0")),
                   "blk.0.attn_norm.weight": ("f32", None),
                   "blk.0.ffn_down.weight": ("f16", ("q6_k", "f16")),
                   "blk.0.ffn_up.weight": ("q5_0", ("q4_k", "q5_0")),
                   "rope_factors_long.weight": ("f32", None),
                   "blk.0.attn_q_norm.weight": ("f32", None),
                   "output.weight": ("q8_0", None)}
    got = {p.name: p.dst for p in conv.plan_tensors(tensors, md, "q8_0")}
    assert got["blk.0.ffn_down.weight"] == "f16" and got["blk.0.ffn_up.weight"] == "q8_0"
    assert got["output.weight"] == "q8_0" and got["token_embd.weight"] == "q8_0"
    got = {p.name: p.dst for p in conv.plan_tensors(tensors, md, "bf16")}
    assert got["blk.0.ffn_up.weight"] == "bf16" and got["blk.0.attn_norm.weight"] == "f32"


@pytest.mark.parametrize("model, mix", [("smollm2_path", "q4_1"), ("gemma3_path", "q4_k_m")])
def test_plan_reproduces_llama_cpp_files(model, mix, request):
    """The packaged models were quantized by llama.cpp: our plan for their file type gives
    every tensor the type it has (SmolLM2: tied Q8_0 embedding by fallback from Q6_K; Gemma 3:
    rows of 640, attn_v/ffn_down use_more_bits layers, Q4_K -> Q5_0, Q6_K -> Q8_0)."""
    path = request.getfixturevalue(model)
    with torchless.load(path) as f:
        assert f.metadata["general.file_type"] == FILE_TYPE[mix]
        plans = conv.plan_tensors([(n, f.tensors[n].dtype, f.tensors[n].shape) for n in f.tensors], f.metadata, mix)
        wrong = [(p.name, p.dst, f.tensors[p.name].dtype) for p in plans if p.dst != f.tensors[p.name].dtype]
        assert not wrong
        fb = conv.describe_fallbacks(f)
    if mix == "q4_k_m":
        assert [(g["from"], g["to"], g["tensors"], g["row_sizes"]) for g in fb] == [
            ("q4_k", "q5_0", 81, [640]), ("q6_k", "q8_0", 9, [640])]
    else:
        assert [(g["from"], g["to"], g["tensors"]) for g in fb] == [("q6_k", "q8_0", 1)]


# --------------------------------------------------------------------------- CLI, chains, info


def test_cli_quantize_chain_and_info(awkward, tmp_path, capsys, rng):
    spec, src = awkward
    f16, q8, q4 = tmp_path / "m-f16.gguf", tmp_path / "m-q8_0.gguf", tmp_path / "m-q4_k_m.gguf"
    code, out, err = run_cli(capsys, "quantize", src, f16, "F16")
    assert code == 0, err
    assert f"{f16}:" in out and "F16" in out and "bpw" in out
    code, out, err = run_cli(capsys, "quantize", f16, q8, "q8_0", "--quiet")
    assert code == 0 and "warning" not in err
    code, out, err = run_cli(capsys, "convert", q8, q4, "--type", "Q4_K", "-q")   # alias of q4_k_m
    assert code == 0
    assert "torchless: warning:" in err and "requantizing" in err and "Q8_0" in err
    assert "requantized:" in out and "fallbacks: 4 tensors Q4_K→Q5_0 (rows of 320 not a multiple of 256)" in out
    tensors, reader = read(q4)
    assert reader.fields["general.file_type"].contents() == 15
    # requantized = quantize(dequantize(q8_0 of dequantize(f16)))
    w = spec.weights["blk.2.attn_q.weight"]
    step = torchless.dequantize(torchless.quantize(w.astype(np.float16).astype(np.float32), "q8_0"), "q8_0", w.shape)
    assert np.array_equal(np.asarray(tensors["blk.2.attn_q.weight"][1]).reshape(-1),
                          torchless.quantize(step, "q4_k").reshape(-1))
    # info derives the fallbacks from the types and general.file_type
    code, out, err = run_cli(capsys, "info", q4)
    assert code == 0
    line = [ln for ln in out.splitlines() if ln.startswith("fallbacks:")]
    assert line and line[0].split(":", 1)[1].strip() == (
        "4 tensors Q4_K→Q5_0 (rows of 320 not a multiple of 256); 4 tensors Q6_K→Q8_0 (rows of 320 not a multiple of 256)")
    code, out, _ = run_cli(capsys, "info", q4, "--json")
    assert json.loads(out)["fallbacks"] == [{"from": "q4_k", "to": "q5_0", "tensors": 4, "row_sizes": [320]},
                                            {"from": "q6_k", "to": "q8_0", "tensors": 4, "row_sizes": [320]}]
    code, out, _ = run_cli(capsys, "info", q8)
    assert "fallbacks:" not in out
    err_, tol = engine_vs_reference(q4, rng, spec.config.n_vocab)
    assert err_ <= tol


def test_metadata_is_copied_with_its_types(smollm2_path, tmp_path):
    """Every key of a llama.cpp file comes through with its value and GGUF type (tokenizer,
    chat template, string arrays); general.file_type and quantization_version are set."""
    out = tmp_path / "smol-q8_0.gguf"
    with pytest.warns(UserWarning, match=r"requantizing 210 tensors already in Q4_1"):
        report = torchless.convert(smollm2_path, out, "q8_0", progress=False)
    assert report.requantized == {"q4_1": 210}
    with torchless.load(smollm2_path) as a, torchless.load(out) as b:
        ma, mb = dict(a.metadata), dict(b.metadata)
        assert a.metadata_types == b.metadata_types
        assert (ma.pop("general.file_type"), mb.pop("general.file_type")) == (3, 7)
        assert mb["general.quantization_version"] == 2
        assert ma.keys() == mb.keys()
        for k in ma:
            va, vb = ma[k], mb[k]
            same = np.array_equal(va, vb) if isinstance(va, np.ndarray) else list(va) == list(vb) \
                if isinstance(va, torchless.StringArray) else va == vb
            assert same, k
        assert list(a.tensors) == list(b.tensors)
        for name in ("token_embd.weight", "blk.0.attn_norm.weight"):   # Q8_0 and F32: copied as they are
            assert np.array_equal(np.asarray(a.tensors[name]), np.asarray(b.tensors[name]))


def test_chunked_and_threaded_output_is_identical(awkward, tmp_path, monkeypatch):
    """Row chunks quantized on several threads come out in order: the file is the same."""
    _, src = awkward
    one, many = tmp_path / "one.gguf", tmp_path / "many.gguf"
    torchless.convert(src, one, "q4_k_m", progress=False, n_threads=1)
    monkeypatch.setattr(conv, "_CHUNK_ELEMENTS", 1000)   # rows of 256 or 320: several chunks each
    torchless.convert(src, many, "q4_k_m", progress=False, n_threads=3)
    assert one.read_bytes() == many.read_bytes()


def test_progress_goes_to_stderr(awkward, tmp_path, capsys):
    _, src = awkward
    torchless.convert(src, tmp_path / "p.gguf", "q8_0")
    out = capsys.readouterr()
    assert out.out == ""
    assert "torchless convert: " in out.err and "Q8_0" in out.err and "tensors" in out.err


# --------------------------------------------------------------------------- q/k permutation


def test_neox_table_is_permuted_back_to_norm_rope(tmp_path, rng):
    """A table marked torchless.rope.neox (q/k rows in rotate-half order, as HF LLaMA stores
    them) converted to GGUF has llama.cpp's row order again, without the key: the same
    tensors and logits as the NORM original; quantized rows are permuted whole."""
    spec = synth.make("llama", rng)
    c = spec.config
    orig = tmp_path / "norm.gguf"
    synth.write(spec, orig, "f32")
    neox = synth.Spec(spec.variant, spec.config, dict(spec.weights), dict(spec.metadata))
    for l in range(c.n_layers):
        neox.weights[f"blk.{l}.attn_q.weight"] = synth.permute_for_neox(spec.weights[f"blk.{l}.attn_q.weight"], c.n_heads, c.head_dim)
        neox.weights[f"blk.{l}.attn_k.weight"] = synth.permute_for_neox(spec.weights[f"blk.{l}.attn_k.weight"], c.n_kv_heads, c.head_dim)
    neox.metadata["torchless.rope.neox"] = True
    neox.metadata["torchless.source"] = "hf"
    neox.metadata["torchless.eog_token_ids"] = torchless.gguf.Value([2], "array[int32]")
    for dtype in ("f32", "q8_0"):
        src = tmp_path / f"neox-{dtype}.gguf"
        synth.write(neox, src, dtype)
        out, want = tmp_path / f"back-{dtype}.gguf", tmp_path / f"want-{dtype}.gguf"
        report = torchless.convert(src, out, dtype, progress=False)
        assert report.permuted == 2 * c.n_layers
        torchless.convert(orig, want, dtype, progress=False)
        got, reader = read(out)
        ref, _ = read(want)
        for name in ref:
            assert np.array_equal(np.asarray(got[name][1]), np.asarray(ref[name][1])), (dtype, name)
        keys = set(reader.fields)
        assert "torchless.rope.neox" not in keys and "torchless.source" not in keys
        assert list(reader.fields["torchless.eog_token_ids"].contents()) == [2]   # kept: llama.cpp ignores it
        toks = [int(t) for t in rng.integers(0, c.n_vocab, 8)]
        a = torchless.Model(str(out), max_seq_len=32, kv_dtype="f32").forward(toks, 0, 0)
        b = torchless.Model(str(want), max_seq_len=32, kv_dtype="f32").forward(toks, 0, 0)
        assert np.array_equal(a, b)


def test_permutation_is_llama_cpp_permute():
    """LlamaModel.permute (convert_hf_to_gguf.py) undoes the rotate-half order: it is the
    inverse of synth.permute_for_neox."""
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)
    neox = synth.permute_for_neox(w, 2, 8)
    assert np.array_equal(neox[conv._permutation(16, 2)], w)


# --------------------------------------------------------------------------- broken usage


def _no_output(directory, before):
    assert sorted(os.listdir(directory)) == before, "a partial output file was left behind"


def test_unknown_type(awkward, tmp_path, capsys):
    _, src = awkward
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="unknown type 'q3_x'; one of f32, f16"):
        torchless.convert(src, tmp_path / "o.gguf", "q3_x")
    code, out, err = run_cli(capsys, "quantize", src, tmp_path / "o.gguf", "q7")
    assert code == 1 and out == "" and "unknown type 'q7'" in err and err.count("\n") == 1
    _no_output(tmp_path, before)


def test_missing_source(tmp_path, capsys):
    code, out, err = run_cli(capsys, "convert", tmp_path / "nope.gguf", tmp_path / "o.gguf")
    assert code == 1 and out == "" and err.startswith("torchless: error: ") and "nope.gguf" in err
    assert os.listdir(tmp_path) == []


def test_unwritable_output(awkward, tmp_path, capsys):
    _, src = awkward
    before = sorted(os.listdir(tmp_path))
    code, _, err = run_cli(capsys, "convert", src, tmp_path / "no" / "such" / "dir" / "o.gguf")
    assert code == 1 and "no such directory" in err and str(tmp_path / "no" / "such" / "dir") in err
    code, _, err = run_cli(capsys, "convert", src, tmp_path)
    assert code == 1 and "directory" in err
    _no_output(tmp_path, before)


def test_same_path_for_input_and_output(awkward, tmp_path, capsys):
    _, src = awkward
    data = src.read_bytes()
    code, _, err = run_cli(capsys, "quantize", src, src, "q8_0")
    assert code == 1 and "would overwrite the source" in err
    link = tmp_path / "link.gguf"
    link.symlink_to(src)
    with pytest.raises(ValueError, match="would overwrite the source"):
        torchless.convert(src, link, "q8_0", progress=False)
    assert src.read_bytes() == data


def test_failure_midway_leaves_no_file(awkward, tmp_path, monkeypatch):
    _, src = awkward
    before = sorted(os.listdir(tmp_path))
    calls = []

    def failing(x, dtype):
        calls.append(dtype)
        if len(calls) > 3:
            raise MemoryError("simulated")
        return torchless.quantize(x, dtype).reshape(-1)

    monkeypatch.setattr(conv, "_from_f32", failing)
    with pytest.raises(MemoryError):
        torchless.convert(src, tmp_path / "o.gguf", "q8_0", progress=False, n_threads=1)
    _no_output(tmp_path, before)


def test_native_format_output_equals_gguf_output(awkward, tmp_path, rng):
    """.tl from convert holds the same tensors and metadata as the .gguf, and runs the same."""
    spec, src = awkward
    conv_gguf, conv_tl = tmp_path / "o.gguf", tmp_path / "o.tl"
    torchless.convert(src, conv_gguf, "q4_k_m", progress=False)
    torchless.convert(src, conv_tl, "q4_k_m", progress=False)
    a, b = torchless.load(conv_gguf), torchless.load(conv_tl)
    assert b.format == "tl"
    ma, mb = a.metadata, b.metadata
    assert sorted(ma) == sorted(mb)
    for k in ma:
        assert np.array_equal(np.asarray(ma[k]), np.asarray(mb[k])), k
    assert a.metadata_types == b.metadata_types
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        ta, tb = a.tensors[name], b.tensors[name]
        assert ta.dtype == tb.dtype and ta.shape == tb.shape, name
        assert bytes(memoryview(ta)) == bytes(memoryview(tb)), name
    toks = [int(t) for t in rng.integers(0, 64, 6)]
    la = torchless.Model(str(conv_gguf), max_seq_len=32).forward(toks, 0, 0)
    lb = torchless.Model(str(conv_tl), max_seq_len=32).forward(toks, 0, 0)
    assert np.array_equal(la, lb)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"])
def test_hf_folder_converted_to_gguf_gives_the_folders_logits(arch, tmp_path, seed, rng):
    """HF folder -> convert -> GGUF: q/k permuted for llama/mistral, Gemma norms with their +1,
    phi3's factor tensors carried; the GGUF's logits equal the folder's (F32, same arithmetic
    up to the RoPE pairing), and the gguf package reads the file."""
    from reference import hf_synth

    hf = hf_synth.make_hf_model(tmp_path / arch, arch, seed=seed)
    out = tmp_path / f"{arch}.gguf"
    torchless.convert(hf["path"], out, "f32", progress=False)
    md = torchless.load(out).metadata
    assert not any(k.startswith("torchless.rope") or k == "torchless.source" for k in md), sorted(md)
    gguf.GGUFReader(str(out))
    toks = [int(t) for t in rng.integers(0, hf["n_tokenizer_vocab"], 10)]
    if hf["token_ids"]["bos"] is not None:
        toks[0] = hf["token_ids"]["bos"]
    folder = torchless.Model(str(hf["path"]), max_seq_len=64, kv_dtype="f32").forward(toks, 0, 0)
    conv_ = torchless.Model(str(out), max_seq_len=64, kv_dtype="f32").forward(toks, 0, 0)
    err = normwise_error(conv_, folder)
    assert err.max() <= 1e-5, f"{arch}: converted GGUF differs from the folder by {err.max():.3g}"
    ref = ReferenceModel.from_hf(hf["config"], hf["state_dict"])
    assert normwise_error(conv_, ref.forward(toks, 0)).max() <= TOL
    # and the tokenizer travels: same ids for a mixed text
    text = "Hello wörld, 123 <b>"
    assert torchless.Tokenizer(str(out)).encode(text) == torchless.Tokenizer(str(hf["path"])).encode(text)


def test_hf_folder_quantized_q8_0_matches_reference_on_dequantized_weights(tmp_path, seed, rng):
    from reference import hf_synth

    hf = hf_synth.make_hf_model(tmp_path / "gemma3", "gemma3", seed=seed, dtype="bf16")
    out = tmp_path / "g.gguf"
    torchless.convert(hf["path"], out, "q8_0", progress=False)
    err, tol = engine_vs_reference(out, rng, hf["n_tokenizer_vocab"])
    assert err <= tol, f"q8_0 gemma3 from a BF16 folder: {err:.3g} > {tol}"


def test_source_without_architecture(tmp_path):
    src = tmp_path / "plain.gguf"
    torchless.gguf.write(src, {"general.name": "x"}, {"a.weight": np.ones((2, 32), np.float32)})
    with pytest.raises(ValueError, match="general.architecture"):
        torchless.convert(src, tmp_path / "o.gguf", "q8_0", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["plain.gguf"]
