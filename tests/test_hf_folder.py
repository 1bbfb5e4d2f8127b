"""Hugging Face folders (config.json + safetensors + tokenizer.json) opened as the one
tl_weights table: llama.cpp's GGUF keys and tensor names per architecture, for both
config schemas (transformers 4: rope_theta / rope_scaling / sliding_window_pattern;
transformers 5: rope_parameters / layer_types), Gemma norms with the +1, tokenizers
checked id for id against the `tokenizers` package on the shared corpus, and a llama
folder that runs the same forward as its GGUF conversion."""

import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import torchless

tokenizers = pytest.importorskip("tokenizers")
from safetensors.numpy import save_file  # noqa: E402
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORPUS = json.loads((REPO / "tests" / "data" / "tokenizer_corpus.json").read_text(encoding="utf-8"))

# ---------------------------------------------------------------- building folders

DIM, N_LAYERS, N_HEADS, N_KV, FFN, VOCAB = 64, 6, 4, 2, 96, 300

BASE = dict(hidden_size=DIM, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, num_key_value_heads=N_KV,
            intermediate_size=FFN, vocab_size=VOCAB, max_position_embeddings=512, rms_norm_eps=1e-5)

CONFIGS = {
    "llama": dict(architectures=["LlamaForCausalLM"], model_type="llama", tie_word_embeddings=False),
    "mistral": dict(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=128,
                    tie_word_embeddings=False),
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", tie_word_embeddings=True,
                  use_sliding_window=False, sliding_window=4096),
    "qwen3": dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32, tie_word_embeddings=True),
    "gemma": dict(architectures=["GemmaForCausalLM"], model_type="gemma", head_dim=16),
    "gemma2": dict(architectures=["Gemma2ForCausalLM"], model_type="gemma2", head_dim=16, sliding_window=64,
                   query_pre_attn_scalar=24, attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    "gemma3": dict(architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", head_dim=16, sliding_window=32,
                   query_pre_attn_scalar=16, final_logit_softcapping=None, attn_logit_softcapping=None),
    "phi3": dict(architectures=["Phi3ForCausalLM"], model_type="phi3", tie_word_embeddings=False,
                 sliding_window=2047),
}
GGUF_ARCH = {"mistral": "llama"}
GEMMA = ("gemma", "gemma2", "gemma3")
ROPE_THETA = {"gemma3": 1e6}


def hf_config(arch, schema="v4", **kw):
    cfg = dict(BASE, **CONFIGS[arch])
    theta = ROPE_THETA.get(arch, 10000.0)
    if schema == "v4":
        cfg["rope_theta"] = theta
        if arch == "gemma3":
            cfg["rope_local_base_freq"] = 10000.0
            cfg["sliding_window_pattern"] = 6
    else:
        if arch == "gemma3":
            cfg["rope_parameters"] = {"full_attention": {"rope_type": "default", "rope_theta": theta},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
            cfg["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(N_LAYERS)]
        else:
            cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
        if arch == "gemma2":
            cfg["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(N_LAYERS)]
    cfg.update(kw)
    return cfg


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def hf_tensors(arch, cfg, rng, dtype=np.float32):
    """HF names -> arrays (NumPy order), random, never all zeros."""
    hd, nh, nkv = head_dim(cfg), cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def r(*shape, scale=0.1):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    t = {"model.embed_tokens.weight": r(v, d), "model.norm.weight": r(d, scale=0.5) + 1}
    if not cfg.get("tie_word_embeddings", arch in GEMMA):
        t["lm_head.weight"] = r(v, d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = r(d, scale=0.5) + 1
        t[p + "post_attention_layernorm.weight"] = r(d, scale=0.5) + 1
        t[p + "self_attn.o_proj.weight"] = r(d, nh * hd)
        t[p + "mlp.down_proj.weight"] = r(d, f)
        t[p + "self_attn.rotary_emb.inv_freq"] = r(hd // 2)  # an old buffer the reader drops
        if arch == "phi3":
            t[p + "self_attn.qkv_proj.weight"] = r((nh + 2 * nkv) * hd, d)
            t[p + "mlp.gate_up_proj.weight"] = r(2 * f, d)
            continue
        t[p + "self_attn.q_proj.weight"] = r(nh * hd, d)
        t[p + "self_attn.k_proj.weight"] = r(nkv * hd, d)
        t[p + "self_attn.v_proj.weight"] = r(nkv * hd, d)
        t[p + "mlp.gate_proj.weight"] = r(f, d)
        t[p + "mlp.up_proj.weight"] = r(f, d)
        if arch == "qwen2":
            for x, n in (("q", nh), ("k", nkv), ("v", nkv)):
                t[p + f"self_attn.{x}_proj.bias"] = r(n * hd)
        if arch in ("qwen3", "gemma3"):
            t[p + "self_attn.q_norm.weight"] = r(hd, scale=0.5)
            t[p + "self_attn.k_norm.weight"] = r(hd, scale=0.5)
        if arch in ("gemma2", "gemma3"):
            t[p + "pre_feedforward_layernorm.weight"] = r(d, scale=0.5)
            t[p + "post_feedforward_layernorm.weight"] = r(d, scale=0.5)
    return t


def bf16_bits(a):
    """float32 -> bfloat16 bit patterns, round to nearest even."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_bf16_safetensors(path, arrays):
    """A safetensors file with BF16 tensors, written by hand (the numpy API has no bfloat16)."""
    header, blobs, off = {}, [], 0
    for name, a in arrays.items():
        raw = bf16_bits(a).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_folder(folder, arch, rng, schema="v4", dtype="f32", tensors=None, **cfg_kw):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = hf_config(arch, schema, **cfg_kw)
    (folder / "config.json").write_text(json.dumps(cfg))
    if tensors is None:
        tensors = hf_tensors(arch, cfg, rng)
    if dtype == "bf16":
        write_bf16_safetensors(folder / "model.safetensors", tensors)
    else:
        np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]
        save_file({k: v.astype(np_dtype) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return cfg, tensors


def gguf_names(arch, n_layers=N_LAYERS):
    """The GGUF tensor names llama.cpp's converter writes for our synthetic folders."""
    names = {"token_embd.weight", "output_norm.weight"}
    if arch in ("llama", "mistral", "phi3"):
        names.add("output.weight")
    for i in range(n_layers):
        b = f"blk.{i}."
        names |= {b + "attn_norm.weight", b + "attn_output.weight", b + "ffn_down.weight", b + "ffn_up.weight"}
        if arch == "phi3":
            names |= {b + "attn_qkv.weight", b + "ffn_norm.weight"}
            continue
        names |= {b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight", b + "ffn_gate.weight",
                  b + "ffn_norm.weight"}
        if arch == "qwen2":
            names |= {b + "attn_q.bias", b + "attn_k.bias", b + "attn_v.bias"}
        if arch in ("qwen3", "gemma3"):
            names |= {b + "attn_q_norm.weight", b + "attn_k_norm.weight"}
        if arch in ("gemma2", "gemma3"):
            names |= {b + "post_attention_norm.weight", b + "post_ffw_norm.weight"}
    return names


# ---------------------------------------------------------------- config -> keys, tensors -> names


@pytest.mark.parametrize("schema", ["v4", "v5"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_config_becomes_llama_cpp_keys_and_tensor_names(arch, schema, tmp_path, rng):
    cfg, hf = write_folder(tmp_path, arch, rng, schema)
    f = torchless.load(tmp_path)
    assert f.format == "hf"
    md, a = f.metadata, GGUF_ARCH.get(arch, arch)
    assert md["general.architecture"] == a and md["torchless.source"] == "hf"
    hd = head_dim(cfg)
    want = {
        f"{a}.embedding_length": DIM, f"{a}.block_count": N_LAYERS, f"{a}.feed_forward_length": FFN,
        f"{a}.attention.head_count": N_HEADS, f"{a}.attention.head_count_kv": N_KV, f"{a}.context_length": 512,
        f"{a}.rope.dimension_count": hd,
    }
    for k, v in want.items():
        assert md[k] == v, k
    assert f.metadata_types[f"{a}.block_count"] == "uint32"
    assert md[f"{a}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5, rel=1e-6)
    assert md[f"{a}.rope.freq_base"] == ROPE_THETA.get(arch, 10000.0)
    if "head_dim" in cfg:
        assert md[f"{a}.attention.key_length"] == hd and md[f"{a}.attention.value_length"] == hd
    assert md.get("torchless.rope.neox", False) is (a == "llama")
    assert md.get(f"{a}.vocab_size") == (VOCAB if a == "llama" else None)  # only LlamaModel writes it
    # tensors: exactly the converter's names, shapes as the HF arrays, matrices as stored
    assert set(f.tensors) == gguf_names(arch)
    assert f.tensors["token_embd.weight"].shape == hf["model.embed_tokens.weight"].shape
    q = "blk.0.attn_qkv.weight" if arch == "phi3" else "blk.0.attn_q.weight"
    hq = "model.layers.0.self_attn." + ("qkv_proj.weight" if arch == "phi3" else "q_proj.weight")
    np.testing.assert_array_equal(np.asarray(f.tensors[q]), hf[hq])
    if arch == "phi3":
        np.testing.assert_array_equal(np.asarray(f.tensors["blk.1.ffn_up.weight"]),
                                      hf["model.layers.1.mlp.gate_up_proj.weight"])
    # architecture specifics
    if arch == "mistral":
        assert md["llama.attention.sliding_window"] == 128
    if arch in ("qwen2", "llama", "gemma", "qwen3"):
        assert f"{a}.attention.sliding_window" not in md
    if arch == "phi3":
        assert md["phi3.attention.sliding_window"] == 2047
    if arch == "gemma2":
        assert md["gemma2.attention.sliding_window"] == 64
        assert md["gemma2.attention.scale"] == pytest.approx(24 ** -0.5, rel=1e-6)
        assert md["gemma2.attn_logit_softcapping"] == 50.0 and md["gemma2.final_logit_softcapping"] == 30.0
        if schema == "v5":
            assert list(md["gemma2.attention.sliding_window_pattern"]) == [i % 2 == 0 for i in range(N_LAYERS)]
    if arch == "gemma3":
        assert md["gemma3.attention.sliding_window"] == 32
        assert md["gemma3.rope.freq_base_swa"] == 10000.0
        assert md["gemma3.attention.scale"] == pytest.approx(0.25, rel=1e-6)
        assert "gemma3.final_logit_softcapping" not in md
        pattern = md["gemma3.attention.sliding_window_pattern"]
        if schema == "v4":
            assert pattern == 6
        else:
            assert list(pattern) == [(i + 1) % 6 != 0 for i in range(N_LAYERS)]


@pytest.mark.parametrize("arch", ["llama", "gemma", "gemma2", "gemma3", "qwen3"])
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_norms_become_f32_with_gemma_plus_one_and_matrices_keep_their_dtype(arch, dtype, tmp_path, rng):
    cfg, hf = write_folder(tmp_path, arch, rng, dtype=dtype)
    f = torchless.load(tmp_path)

    def stored(a):  # what the file holds, as float32
        if dtype == "bf16":
            return (bf16_bits(a).astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float16 if dtype == "f16" else np.float32).astype(np.float32)

    plus = 1.0 if arch in GEMMA else 0.0
    pairs = [("output_norm.weight", "model.norm.weight"), ("blk.2.attn_norm.weight", "model.layers.2.input_layernorm.weight")]
    if arch in ("gemma2", "gemma3"):
        pairs += [("blk.1.post_attention_norm.weight", "model.layers.1.post_attention_layernorm.weight"),
                  ("blk.1.ffn_norm.weight", "model.layers.1.pre_feedforward_layernorm.weight"),
                  ("blk.1.post_ffw_norm.weight", "model.layers.1.post_feedforward_layernorm.weight")]
    else:
        pairs += [("blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight")]
    if arch in ("qwen3", "gemma3"):
        pairs += [("blk.3.attn_k_norm.weight", "model.layers.3.self_attn.k_norm.weight")]
    for g, h in pairs:
        view = f.tensors[g]
        assert view.dtype == "f32", g
        np.testing.assert_array_equal(np.asarray(view), stored(hf[h]) + np.float32(plus), err_msg=g)
    w = f.tensors["blk.0.ffn_down.weight"]
    assert w.dtype == dtype
    np.testing.assert_array_equal(w.dequantize(), stored(hf["model.layers.0.mlp.down_proj.weight"]))


def test_sharded_index_folder(tmp_path, rng):
    cfg = hf_config("qwen2")
    hf = hf_tensors("qwen2", cfg, rng)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    names = sorted(hf)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: hf[n] for n in part}, str(tmp_path / fn))
        weight_map.update({n: fn for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    f = torchless.load(tmp_path)
    assert set(f.tensors) == gguf_names("qwen2")
    np.testing.assert_array_equal(np.asarray(f.tensors["blk.5.attn_v.bias"]), hf["model.layers.5.self_attn.v_proj.bias"])


def test_gemma3_multimodal_text_config(tmp_path, rng):
    text = {k: v for k, v in hf_config("gemma3").items() if k != "architectures"}
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text,
           "vision_config": {"hidden_size": 8}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    hf = hf_tensors("gemma3", text, rng)
    renamed = {("model.language_model." + k[len("model."):]): v for k, v in hf.items()}
    renamed["model.vision_tower.patch.weight"] = rng.standard_normal((4, 4)).astype(np.float32)
    save_file(renamed, str(tmp_path / "model.safetensors"))
    f = torchless.load(tmp_path)
    assert f.metadata["general.architecture"] == "gemma3"
    assert set(f.tensors) == gguf_names("gemma3")


# ---------------------------------------------------------------- RoPE scaling


def llama3_factors(theta, dim, factor, lo, hi, orig):
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < orig / hi:
            out.append(1.0)
        elif wavelen > orig / lo:
            out.append(factor)
        else:
            smooth = (orig / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


@pytest.mark.parametrize("schema", ["v4", "v5"])
def test_llama3_rope_scaling_becomes_rope_freqs(schema, tmp_path, rng):
    rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
    if schema == "v4":
        kw = dict(rope_theta=500000.0, rope_scaling=rs)
    else:
        kw = dict(rope_parameters=dict(rs, rope_theta=500000.0))
    write_folder(tmp_path, "llama", rng, schema, **kw)
    f = torchless.load(tmp_path)
    assert "llama.rope.scaling.type" not in f.metadata
    want = llama3_factors(500000.0, DIM // N_HEADS, 8.0, 1.0, 4.0, 64)
    np.testing.assert_allclose(np.asarray(f.tensors["rope_freqs.weight"]), want, rtol=1e-6)
    assert (want != 1).any() and (want != 8).any()


def test_linear_rope_scaling_and_gemma3_per_layer_type_parameters(tmp_path, rng):
    params = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
              "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    write_folder(tmp_path, "gemma3", rng, "v5", rope_parameters=params)
    md = torchless.load(tmp_path).metadata
    assert md["gemma3.rope.scaling.type"] == "linear" and md["gemma3.rope.scaling.factor"] == 8.0
    assert md["gemma3.rope.freq_base"] == 1e6 and md["gemma3.rope.freq_base_swa"] == 10000.0


def test_phi3_longrope_factors_and_attn_factor(tmp_path, rng):
    hd = DIM // N_HEADS
    long_f = list(rng.uniform(1, 4, hd // 2))
    short_f = list(rng.uniform(1, 2, hd // 2))
    rs = {"type": "longrope", "long_factor": long_f, "short_factor": short_f}
    write_folder(tmp_path, "phi3", rng, rope_scaling=rs, original_max_position_embeddings=128,
                 max_position_embeddings=4096, partial_rotary_factor=1.0)
    f = torchless.load(tmp_path)
    md = f.metadata
    assert md["phi3.context_length"] == 4096 and md["phi3.rope.scaling.original_context_length"] == 128
    scale = 4096 / 128
    assert md["phi3.rope.scaling.attn_factor"] == pytest.approx(math.sqrt(1 + math.log(scale) / math.log(128)), rel=1e-6)
    np.testing.assert_allclose(np.asarray(f.tensors["rope_factors_long.weight"]), np.float32(long_f))
    np.testing.assert_allclose(np.asarray(f.tensors["rope_factors_short.weight"]), np.float32(short_f))


def test_partial_rotary_factor(tmp_path, rng):
    write_folder(tmp_path, "qwen3", rng, partial_rotary_factor=0.5)
    assert torchless.load(tmp_path).metadata["qwen3.rope.dimension_count"] == 16


# ---------------------------------------------------------------- tokenizers

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
            r"|\s+(?!\S)|\s+")
TRAIN = CORPUS + [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Hello world! This is a small training text, with numbers 12345 and 2024-11-27.",
    "def main():\n    print('hello')\n    return 0\n",
]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


def byte_level_tokenizer(style):
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=style in ("gpt-2", "smollm"))
    steps = {
        "gpt-2": [bl],
        "llama-bpe": [pre_tokenizers.Split(Regex(LLAMA3_RE), "isolated"), bl],
        "qwen2": [pre_tokenizers.Split(Regex(QWEN2_RE), "isolated"), bl],
        "smollm": [pre_tokenizers.Digits(individual_digits=True), bl],
    }[style]
    tk = tokenizers.Tokenizer(models.BPE(ignore_merges=style == "llama-bpe"))
    tk.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(TRAIN, trainer)
    if style == "llama-bpe":
        tk.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                          special_tokens=[("<|begin_of_text|>", 0)])
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    return tk


SPM_SPECIALS = ["<unk>", "<s>", "</s>"]


def spm_tokenizer(style):
    """SentencePiece-style BPE as transformers writes it: byte fallback over <0xNN> vocabulary
    entries, spaces as U+2581 (Replace + Prepend normalizer, or a Metaspace pre-tokenizer)."""
    tk = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if style == "normalizer":
        tk.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    elif style == "gemma":  # Gemma's tokenizer.json: no prefix, and a Split at ' ' that finds none
        tk.normalizer = normalizers.Replace(" ", "\u2581")
        tk.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    else:
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPM_SPECIALS, show_progress=False, limit_alphabet=80)
    tk.train_from_iterator(TRAIN, trainer)
    # put the 256 byte tokens into the vocabulary after the specials, as Llama's tokenizer.json has them
    d = json.loads(tk.to_str())
    old = d["model"]["vocab"]
    vocab = {t: i for i, t in enumerate(SPM_SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(old.items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    d["model"]["vocab"] = vocab
    for a in d["added_tokens"]:
        a["id"] = vocab[a["content"]]
    tk = tokenizers.Tokenizer.from_str(json.dumps(d))
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tk


def folder_with_tokenizer(tmp_path, rng, tk, arch="llama", tokenizer_config=None, generation_config=None, **kw):
    n = tk.get_vocab_size()
    write_folder(tmp_path, arch, rng, vocab_size=n, **kw)
    tk.save(str(tmp_path / "tokenizer.json"))
    if tokenizer_config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if generation_config is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation_config))
    return tmp_path


def assert_same_ids(ours, theirs, add_special, corpus=CORPUS):
    """encode(add_special_tokens=True) is the vocabulary's default (add_bos=None) for us."""
    add_bos = None if add_special else False
    bad = [s for s in corpus if ours.encode(s, add_bos=add_bos, special=True) !=
           theirs.encode(s, add_special_tokens=add_special).ids]
    if bad:
        s = bad[0]
        pytest.fail(f"{len(bad)} of {len(CORPUS)} differ; first {s!r}: ours "
                    f"{ours.encode(s, add_bos=add_bos, special=True)}, tokenizers "
                    f"{theirs.encode(s, add_special_tokens=add_special).ids}")


@pytest.mark.parametrize("style", ["gpt-2", "llama-bpe", "qwen2", "smollm"])
def test_byte_level_tokenizer_json_matches_tokenizers_on_corpus(style, tmp_path, rng):
    tk = byte_level_tokenizer(style)
    folder = folder_with_tokenizer(tmp_path, rng, tk)
    md = torchless.load(folder).metadata
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == style
    vocab = tk.get_vocab(with_added_tokens=True)
    assert md["tokenizer.ggml.tokens"] == [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert list(md["tokenizer.ggml.token_type"][:3]) == [3, 3, 3]  # CONTROL
    ours = torchless.Tokenizer(str(folder))
    assert ours.add_bos is (style == "llama-bpe")
    for add in (False, True):
        assert_same_ids(ours, tk, add)
    text = "Hello world! <|eot_id|> 12345"
    assert ours.decode(ours.encode(text, add_bos=False, special=True), special=True) == text


@pytest.mark.parametrize("style", ["normalizer", "metaspace", "gemma"])
def test_sentencepiece_style_tokenizer_json_matches_tokenizers_on_corpus(style, tmp_path, rng):
    tk = spm_tokenizer(style)
    folder = folder_with_tokenizer(tmp_path, rng, tk)
    md = torchless.load(folder).metadata
    assert md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.ggml.add_space_prefix"] is (style != "gemma")
    assert md["tokenizer.ggml.token_type"][3 + 0x41] == 6  # <0x41> is a BYTE token
    assert md["tokenizer.ggml.bos_token_id"] == 1 and md["tokenizer.ggml.add_bos_token"] is True
    ours = torchless.Tokenizer(str(folder))
    # Known difference: HF's Metaspace does not prepend U+2581 to a text (or the text after a
    # special token) that already starts with a space or U+2581; SentencePiece, llama.cpp and the Prepend
    # normalizer always do, and the GGUF keys cannot say otherwise.
    corpus = CORPUS if style != "metaspace" else [s for s in CORPUS if not re.search("(^|<s>|</s>|<unk>)[ \u2581]", s)]
    for add in (False, True):
        assert_same_ids(ours, tk, add, corpus)


def test_sentencepiece_style_without_prefix(tmp_path, rng):
    tk = spm_tokenizer("normalizer")
    d = json.loads(tk.to_str())
    d["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}  # Gemma's
    tk = tokenizers.Tokenizer.from_str(json.dumps(d))
    folder = folder_with_tokenizer(tmp_path, rng, tk)
    assert torchless.load(folder).metadata["tokenizer.ggml.add_space_prefix"] is False
    assert_same_ids(torchless.Tokenizer(str(folder)), tk, False)


def test_merges_as_pairs(tmp_path, rng):
    tk = byte_level_tokenizer("gpt-2")
    d = json.loads(tk.to_str())
    d["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in d["model"]["merges"]]
    assert isinstance(d["model"]["merges"][0], list)
    tk2 = tokenizers.Tokenizer.from_str(json.dumps(d))
    folder = folder_with_tokenizer(tmp_path, rng, tk2)
    assert_same_ids(torchless.Tokenizer(str(folder)), tk2, False)


def test_special_ids_chat_template_and_eog_from_config_files(tmp_path, rng):
    tk = byte_level_tokenizer("llama-bpe")
    tc = {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>", "special": True},
          "add_bos_token": True, "chat_template": [{"name": "default", "template": "{{ messages }}"},
                                                   {"name": "tool_use", "template": "T"}]}
    folder = folder_with_tokenizer(tmp_path, rng, tk, tokenizer_config=tc,
                                   generation_config={"bos_token_id": 0, "eos_token_id": [1, 2]})
    md = torchless.load(folder).metadata
    assert md["tokenizer.ggml.bos_token_id"] == 0 and md["tokenizer.ggml.eos_token_id"] == 2
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert md["tokenizer.chat_template"] == "{{ messages }}" and md["tokenizer.chat_template.tool_use"] == "T"
    assert list(md["torchless.eog_token_ids"]) == [1, 2]
    tok = torchless.Tokenizer(str(folder))
    assert tok.bos_id == 0 and tok.eos_id == 2 and {1, 2} <= set(tok.eog_ids)
    # a chat_template.jinja file wins over tokenizer_config.json
    (folder / "chat_template.jinja").write_text("{{ bos_token }}jinja")
    assert torchless.load(folder).metadata["tokenizer.chat_template"] == "{{ bos_token }}jinja"


def test_generation_config_eos_ids_end_generation(tmp_path, rng):
    tk = byte_level_tokenizer("gpt-2")
    word = next(i for t, i in tk.get_vocab().items() if i > 100)  # an ordinary token
    folder = folder_with_tokenizer(tmp_path, rng, tk, generation_config={"eos_token_id": [1, word]})
    tok = torchless.Tokenizer(str(folder))
    assert tok.is_eog(word) and tok.is_eog(1) and not tok.is_eog(word + 1)


def test_vocabulary_is_padded_to_the_embedding_rows(tmp_path, rng):
    tk = byte_level_tokenizer("gpt-2")
    n = tk.get_vocab_size()
    write_folder(tmp_path, "qwen2", rng, vocab_size=n + 5)
    tk.save(str(tmp_path / "tokenizer.json"))
    md = torchless.load(tmp_path).metadata
    assert len(md["tokenizer.ggml.tokens"]) == n + 5
    assert md["tokenizer.ggml.tokens"][n + 4] == f"[PAD{n + 4}]" and md["tokenizer.ggml.token_type"][n + 4] == 5


def test_tokenizer_model_is_used_when_present(tmp_path, rng, fixtures):
    """A folder with a SentencePiece tokenizer.model and no tokenizer.json: pieces, scores, types from it."""
    spm = fixtures / "llama2-tokenizer" / "tokenizer.model"
    if not spm.exists():
        pytest.skip("no SentencePiece fixture")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    write_folder(tmp_path, "llama", rng, vocab_size=sp.get_piece_size(), hidden_size=32, intermediate_size=32,
                 num_hidden_layers=1)
    (tmp_path / "tokenizer.model").write_bytes(spm.read_bytes())
    md = torchless.load(tmp_path).metadata
    assert md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.ggml.tokens"][:10] == [sp.id_to_piece(i) for i in range(10)]
    tok = torchless.Tokenizer(str(tmp_path))
    for s in CORPUS[:200]:
        assert tok.encode(s, add_bos=False) == sp.encode(s), s


# ---------------------------------------------------------------- the forward pass


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute: HF rotate-half rows -> GGUF adjacent-pair rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_llama_folder_forward_equals_its_gguf_conversion(tmp_path, rng):
    cfg, hf = write_folder(tmp_path / "hf", "llama", rng)
    tensors = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"],
               "output.weight": hf["lm_head.weight"]}
    for i in range(N_LAYERS):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        tensors[b + "attn_norm.weight"] = hf[p + "input_layernorm.weight"]
        tensors[b + "ffn_norm.weight"] = hf[p + "post_attention_layernorm.weight"]
        tensors[b + "attn_q.weight"] = permute(hf[p + "self_attn.q_proj.weight"], N_HEADS)
        tensors[b + "attn_k.weight"] = permute(hf[p + "self_attn.k_proj.weight"], N_KV)
        for h, g in (("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"),
                     ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")):
            tensors[b + g + ".weight"] = hf[p + h + ".weight"]
    md = {k: v for k, v in torchless.load(tmp_path / "hf").metadata.items() if not k.startswith("torchless.")}
    types = torchless.load(tmp_path / "hf").metadata_types
    gguf = tmp_path / "llama.gguf"
    torchless.gguf.write(gguf, md, tensors, types={k: types[k] for k in md})
    a = torchless.Model(str(tmp_path / "hf"), kv_dtype="f32", max_seq_len=64)
    b = torchless.Model(str(gguf), kv_dtype="f32", max_seq_len=64)
    toks = [int(t) for t in rng.integers(0, VOCAB, 12)]
    la, lb = a.forward(toks, 0, 0), b.forward(toks, 0, 0)
    assert np.linalg.norm(la - lb) / np.linalg.norm(lb) < 1e-5
    # and without the flag the rows would be wrong: the permutation matters
    tensors2 = dict(tensors, **{f"blk.{i}.attn_q.weight": hf[f"model.layers.{i}.self_attn.q_proj.weight"]
                                for i in range(N_LAYERS)})
    torchless.gguf.write(tmp_path / "bad.gguf", md, tensors2, types={k: types[k] for k in md})
    lc = torchless.Model(str(tmp_path / "bad.gguf"), kv_dtype="f32", max_seq_len=64).forward(toks, 0, 0)
    assert np.linalg.norm(lc - lb) / np.linalg.norm(lb) > 1e-3


# ---------------------------------------------------------------- broken folders


def edit_config(folder, **kw):
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in kw.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("edit, message", [
    (dict(hidden_size=None), r"config\.json: 'hidden_size' is missing"),
    (dict(num_hidden_layers="6"), r"'num_hidden_layers' must be an integer"),
    (dict(num_attention_heads=5), r"'num_attention_heads' \(5\) does not divide 'hidden_size' \(64\)"),
    (dict(num_key_value_heads=3), r"'num_key_value_heads' \(3\) does not divide"),
    (dict(architectures=["FalconForCausalLM"]), r"'FalconForCausalLM' is not supported \(supported: LlamaForCausalLM"),
    (dict(architectures=None), r"'architectures' is missing"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), r"rope scaling type 'yarn' is not supported"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 5.0}), r"'rope_theta' \(10000\) and 'rope_parameters'.*disagree"),
    (dict(rms_norm_eps=-1), r"'rms_norm_eps' must be positive"),
    (dict(vocab_size=301), r"'vocab_size' is 301 but model.embed_tokens.weight has 300 rows"),
    (dict(num_hidden_layers=7), r"layer 6 has no tensor for 'blk\.6\.attn_norm\.weight'"),
    (dict(num_hidden_layers=5), r"tensor 'model\.layers\.5\..*' is for layer 5, but config\.json has 5 layers"),
    (dict(architectures=["Qwen2ForCausalLM"]), r"layer 0 has no tensor for 'blk\.0\.attn_q\.bias'"),
])
def test_broken_config_raises_naming_the_field(edit, message, tmp_path, rng):
    write_folder(tmp_path, "llama", rng)
    edit_config(tmp_path, **edit)
    if message is None:
        torchless.load(tmp_path)
        return
    with pytest.raises(ValueError, match=message):
        torchless.load(tmp_path)


def test_gemma3_layer_types_contradicting_pattern(tmp_path, rng):
    write_folder(tmp_path, "gemma3", rng, layer_types=["sliding_attention"] * N_LAYERS)
    with pytest.raises(ValueError, match=r"'layer_types' and 'sliding_window_pattern' \(6\) disagree at layer 5"):
        torchless.load(tmp_path)


def test_broken_files_in_the_folder(tmp_path, rng):
    write_folder(tmp_path, "llama", rng)
    (tmp_path / "config.json").write_text("{\"hidden_size\": 64,")
    with pytest.raises(ValueError, match=r"config\.json"):
        torchless.load(tmp_path)
    write_folder(tmp_path, "llama", rng)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        torchless.load(tmp_path)
    # an index naming a shard that is not there
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "missing.safetensors"}}))
    with pytest.raises((ValueError, FileNotFoundError), match=r"missing\.safetensors"):
        torchless.load(tmp_path)


def test_header_that_lies(tmp_path, rng):
    write_folder(tmp_path, "llama", rng)
    raw = bytearray((tmp_path / "model.safetensors").read_bytes())
    (tmp_path / "model.safetensors").write_bytes(bytes(raw[: len(raw) // 2]))  # truncated data
    with pytest.raises(ValueError, match=r"model\.safetensors.*extend past the end"):
        torchless.load(tmp_path)


@pytest.mark.parametrize("edit, exc, message", [
    (lambda d: d["model"].update(type="Unigram"), ValueError, r"tokenizer model type 'Unigram' is not supported"),
    (lambda d: d["model"].update(type="WordPiece"), ValueError, r"'WordPiece' is not supported"),
    (lambda d: d.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated",
                                       "invert": False}),
     ValueError, r"regex '\\w\+' is not one torchless knows"),
    (lambda d: d["model"].update(merges=["nospace"]), ValueError, r"merge 0 is not"),
    (lambda d: d["model"].update(vocab=[1, 2]), ValueError, r"'model\.vocab' must be an object"),
])
def test_broken_tokenizer_json(edit, exc, message, tmp_path, rng):
    tk = byte_level_tokenizer("qwen2")
    folder = folder_with_tokenizer(tmp_path, rng, tk)
    d = json.loads((folder / "tokenizer.json").read_text())
    edit(d)
    (folder / "tokenizer.json").write_text(json.dumps(d))
    with pytest.raises(exc, match=message):
        torchless.load(folder)


def test_bad_json_in_tokenizer_files(tmp_path, rng):
    tk = byte_level_tokenizer("gpt-2")
    folder = folder_with_tokenizer(tmp_path, rng, tk)
    (folder / "tokenizer_config.json").write_text("{\"bos_token\": }")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: line 1"):
        torchless.load(folder)
    (folder / "tokenizer_config.json").unlink()
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 99999]}))
    with pytest.raises(ValueError, match=r"'eos_token_id' has an id outside the vocabulary"):
        torchless.load(folder)


def test_llama_build_and_generate_from_a_folder(tmp_path, rng):
    tk = byte_level_tokenizer("llama-bpe")
    tc = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
          "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}<|eot_id|>{% endfor %}"}
    folder = folder_with_tokenizer(tmp_path, rng, tk, tokenizer_config=tc)
    llm = torchless.Llama.build(str(folder), max_seq_len=64, max_batch_size=1, verbose=False)
    assert llm.model.params.n_layers == N_LAYERS and llm.model.params.vocab_size == tk.get_vocab_size()
    out = llm.text_completion(["Hello world"], max_gen_len=4, temperature=0.0)
    assert isinstance(out[0]["generation"], str)
    m = torchless.Model(str(folder), max_seq_len=64)
    assert m.chat_template == tc["chat_template"]
    assert m.tokenizer.encode("Hello", add_bos=False) == tk.encode("Hello", add_special_tokens=False).ids


def test_real_vocabulary_smollm2_as_a_folder(tmp_path, rng):
    """SmolLM2's 49k-token vocabulary, written as the tokenizer.json transformers ships
    (Digits + ByteLevel), read back through a folder: the same ids as the GGUF's tokenizer
    and the `tokenizers` package on the whole corpus."""
    try:
        gguf_path = torchless.hub.path("smollm2-135m-instruct")
    except Exception as e:
        pytest.skip(f"smollm2-135m-instruct is not available: {e}")
    md = torchless.load(gguf_path).metadata
    tokens, types = md["tokenizer.ggml.tokens"], list(md["tokenizer.ggml.token_type"])
    vocab = {t: i for i, t in enumerate(tokens)}  # specials too, as the shipped file has them
    merges = [tuple(m.split(" ", 1)) for m in md["tokenizer.ggml.merges"]]
    tk = tokenizers.Tokenizer(models.BPE(vocab, merges))
    tk.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                           for i in range(len(tokens)) if types[i] == 3])
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    assert tk.get_vocab_size() == len(tokens)
    folder = folder_with_tokenizer(tmp_path, rng, tk, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2)
    fmd = torchless.load(folder).metadata
    assert fmd["tokenizer.ggml.pre"] == "smollm" and fmd["tokenizer.ggml.tokens"] == tokens
    assert list(fmd["tokenizer.ggml.token_type"]) == types
    ours, theirs = torchless.Tokenizer(str(folder)), torchless.Tokenizer(str(gguf_path))
    assert_same_ids(ours, tk, False)
    bad = [s for s in CORPUS if ours.encode(s, add_bos=False, special=True) != theirs.encode(s, add_bos=False, special=True)]
    assert not bad, bad[:3]


def test_real_vocabulary_gemma3_sentencepiece_style_from_merges(tmp_path, rng):
    """Gemma 3's 262k SentencePiece vocabulary as the tokenizer.json transformers writes
    (Replace normalizer, no prefix, byte fallback, merges from the piece scores, no
    tokenizer.model): scores derived from the merge ranks give the GGUF tokenizer's ids
    and the `tokenizers` package's on the whole corpus."""
    try:
        gguf_path = torchless.hub.path("gemma3-270m")
    except Exception as e:
        pytest.skip(f"gemma3-270m is not available: {e}")
    md = torchless.load(gguf_path).metadata
    tokens, scores = md["tokenizer.ggml.tokens"], np.asarray(md["tokenizer.ggml.scores"])
    types = np.asarray(md["tokenizer.ggml.token_type"])
    vocab = {t: i for i, t in enumerate(tokens)}
    normal = types == 1
    merges = []  # every split of a normal piece into two normal pieces, best-scored result first
    for t, i in vocab.items():
        if normal[i]:
            for k in range(1, len(t)):
                a, b = vocab.get(t[:k]), vocab.get(t[k:])
                if a is not None and b is not None and normal[a] and normal[b]:
                    merges.append((-scores[i], i, t[:k], t[k:]))
    merges.sort()
    added = [{"id": int(i), "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": bool(types[i] == 3)} for i in np.flatnonzero((types == 3) | (types == 4))]
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
          "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
          "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
          "post_processor": {"type": "TemplateProcessing",
                             "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                             "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
          "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                       {"type": "ByteFallback"}, {"type": "Fuse"}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                    "vocab": vocab, "merges": [[a, b] for *_, a, b in merges]}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "eos_token": "<eos>",
                                                                "pad_token": "<pad>", "add_bos_token": True}))
    cfg = hf_config("gemma3", "v5", vocab_size=len(tokens), hidden_size=8, intermediate_size=8, head_dim=2,
                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, layer_types=["sliding_attention"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    t = hf_tensors("gemma3", dict(cfg, vocab_size=4), rng)
    t["model.embed_tokens.weight"] = np.ones((len(tokens), 8), np.float16)
    save_file(t, str(tmp_path / "model.safetensors"))
    fmd = torchless.load(tmp_path).metadata
    assert fmd["tokenizer.ggml.model"] == "llama" and fmd["tokenizer.ggml.add_space_prefix"] is False
    assert fmd["tokenizer.ggml.bos_token_id"] == 2 and fmd["tokenizer.ggml.padding_token_id"] == 0
    ours, theirs = torchless.Tokenizer(str(tmp_path)), torchless.Tokenizer(str(gguf_path))
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert_same_ids(ours, hf, True)
    bad = [s for s in CORPUS if ours.encode(s, add_bos=False, special=True) != theirs.encode(s, add_bos=False, special=True)]
    assert not bad, bad[:3]


def test_tokenizer_model_supplies_pieces_and_scores_beside_tokenizer_json(tmp_path, rng, fixtures):
    """Llama-2 style: tokenizer.json (Prepend + Replace, byte fallback) and tokenizer.model in
    one folder: the pieces, scores and types come from tokenizer.model, the prefix and the
    added tokens from tokenizer.json."""
    spm = fixtures / "llama2-tokenizer" / "tokenizer.model"
    if not spm.exists():
        pytest.skip("no SentencePiece fixture")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    tj = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>", "special": True},
                                            {"id": 1, "content": "<s>", "special": True},
                                            {"id": 2, "content": "</s>", "special": True},
                                            {"id": n, "content": "<|extra|>", "special": False}],
          "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                             {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
          "pre_tokenizer": None, "decoder": None,
          "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                      {"Sequence": {"id": "A", "type_id": 0}}],
                             "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>", "vocab": vocab, "merges": []}}
    write_folder(tmp_path, "llama", rng, vocab_size=n + 1, hidden_size=32, intermediate_size=32, num_hidden_layers=1)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "tokenizer.model").write_bytes(spm.read_bytes())
    md = torchless.load(tmp_path).metadata
    scores = np.asarray(md["tokenizer.ggml.scores"])
    np.testing.assert_array_equal(scores[:n], np.float32([sp.get_score(i) for i in range(n)]))
    assert md["tokenizer.ggml.tokens"][n] == "<|extra|>" and md["tokenizer.ggml.token_type"][n] == 4
    assert md["tokenizer.ggml.add_bos_token"] is True and md["tokenizer.ggml.add_space_prefix"] is True
    tok = torchless.Tokenizer(str(tmp_path))
    for s in CORPUS[:300]:
        assert tok.encode(s, add_bos=True) == [1] + sp.encode(s), s
    assert tok.encode("a<|extra|>b", add_bos=False)[1] == n
