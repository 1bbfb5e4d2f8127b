"""Seeded random tiny Hugging Face folders, one per architecture, shaped like the real ones.

    m = make_hf_model(tmp_path / "gemma3", "gemma3", seed=1, dtype="bf16", schema=5, sharded=True)
    m["config"]        # the config.json dict
    m["state_dict"]    # {HF name: float64 array}, exactly the stored values (after BF16/F16 rounding)
    ReferenceModel.from_hf(m["config"], m["state_dict"])   # or ReferenceModel.from_hf(folder)

A folder holds `config.json` (transformers-4 schema: `rope_theta`, `rope_scaling`,
`rope_local_base_freq`, `sliding_window_pattern`; or with schema=5 the transformers-5 one:
`rope_parameters`, per layer type for Gemma 3, and `layer_types`), `model.safetensors` (F32, F16
or BF16, written by hand: 8-byte little-endian header length, JSON header, data) or two shards
with `model.safetensors.index.json`, `tokenizer.json` (built with the `tokenizers` package),
`tokenizer_config.json` (chat_template, bos/eos, add_bos_token) and `generation_config.json`.

Architectures (ARCHS) and their quirks:
    llama    byte-level BPE (LLaMA-3 style, BOS added), untied head, GQA 4:2, llama3 rope scaling
    mistral  SentencePiece-style BPE (LLaMA-2 style: "▁" prefix, byte fallback), sliding window 8
    qwen2    byte-level BPE (Qwen style, no BOS), q/k/v biases, untied
    qwen3    byte-level BPE, per-head q/k norms, head_dim 24 ≠ dim / n_heads, tied head
    gemma    SentencePiece-style BPE (Gemma style: no prefix, byte fallback), MQA (1 kv head), tied
    gemma2   + post norms, soft-caps 5 / 3 (small enough to matter), query_pre_attn_scalar 24,
             sliding window 8 on layers 0, 2
    gemma3   + q/k norms, head_dim 32, 6 layers (5 local : 1 global), window 8, local base 10000,
             global theta 1e6 with linear scaling 8, query_pre_attn_scalar 48
    phi3     SentencePiece-style BPE, fused qkv and gate_up, LongRoPE (original context 64,
             max 256: magnitude factor sqrt(1 + ln 4 / ln 64)), embedding rows padded past the
             tokenizer's vocabulary (as Phi-3's 32064 vs 32011)

Weights: linear N(0, 1/fan_in), embeddings N(0, 1), norm weights 1 + N(0, 0.1²) (Gemma: the
HF weight w ~ N(0, 0.1²), used as 1 + w), biases N(0, 0.1²).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .hf import f32_to_bf16, bf16_to_f32

__all__ = ["ARCHS", "DTYPES", "make_hf_model", "write_safetensors", "build_tokenizer", "TRAIN_TEXT"]

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"]
DTYPES = ["f32", "f16", "bf16"]

TRAIN_TEXT = """Once upon a time, there was a little girl named Lily. She liked to play in the park
with her friends. The quick brown fox jumps over the lazy dog. I believe the meaning of life is
to be kind. Simply put, the theory of relativity states that time is relative. Hello world!
The capital of France is Paris. 1234567890 + 42 = 1234567932. def main(): print("hello")
don't, can't, we're, they've, she'd, it's, y'all. Café, naïve, 東京, привет, مرحبا.
"""

# ----------------------------------------------------------------------------- tokenizers

# the pre-tokenizer regexes of LLaMA-3 (digits in runs of up to 3) and Qwen2 (single digits)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _corpus_lines():
    here = Path(__file__).resolve().parents[1] / "data" / "tokenizer_corpus.json"
    lines = TRAIN_TEXT.splitlines()
    if here.exists():
        lines += json.loads(here.read_text())
    return lines


def _template(tok, bos: str | None, bos_id: int | None):
    from tokenizers import processors

    if bos is None:
        return None
    return processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                         special_tokens=[(bos, bos_id)])


def _byte_level(specials: list[str], bos: str | None, vocab_size: int, split: str = _LLAMA3_SPLIT,
                nfc: bool = False):
    """LLaMA-3 / Qwen style: regex split, byte-level alphabet, merges; specials at the end;
    Qwen2 also normalizes to NFC."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus_lines(), trainer)
    tok.add_special_tokens(specials)
    if bos is not None:
        tok.post_processor = _template(tok, bos, tok.token_to_id(bos))
    return tok


def _sentencepiece_bpe(specials: list[str], added: list[str], prefix: bool, bos: str | None,
                       vocab_size: int):
    """SentencePiece-style BPE (LLaMA-2 / Gemma as tokenizer.json holds them): spaces → "▁"
    in the normalizer (with a "▁" prepended for LLaMA-2, not for Gemma), byte fallback to the
    <0xNN> tokens, ids: specials, the 256 byte tokens, then the learned pieces; `added` are
    special tokens appended after them (chat markers)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    norm = [normalizers.Prepend("\u2581")] if prefix else []
    norm.append(normalizers.Replace(" ", "\u2581"))
    # learn pieces and merges on the normalized text
    learn = Tokenizer(models.BPE())
    learn.normalizer = normalizers.Sequence(norm)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    learn.train_from_iterator(_corpus_lines(), trainer)
    spec = json.loads(learn.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for t in specials + [f"<0x{b:02X}>" for b in range(256)]:
        vocab[t] = len(vocab)
    for t, _ in learned:
        if t not in vocab:
            vocab[t] = len(vocab)
    spec["model"] = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                     "ignore_merges": False, "vocab": vocab, "merges": spec["model"]["merges"]}
    spec["added_tokens"] = []
    spec["pre_tokenizer"] = None
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.normalizer = normalizers.Sequence(norm)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials + added])
    if bos is not None:
        tok.post_processor = _template(tok, bos, tok.token_to_id(bos))
    return tok


_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
_LLAMA3_CHAT = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
                " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
                "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
_GEMMA_CHAT = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
               "{{ '<start_of_turn>' + role + '\n' + m['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
_LLAMA2_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
                "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")
_PHI3_CHAT = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


def build_tokenizer(style: str):
    """(tokenizers.Tokenizer, tokenizer_config dict, {bos, eos, pad, eog ids}) for a style:
    "llama3", "qwen", "llama2", "gemma", "phi3"."""
    if style == "llama3":
        sp = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        tok = _byte_level(sp, "<|begin_of_text|>", 400)
        bos, eos, eog, tmpl, add_bos = "<|begin_of_text|>", "<|end_of_text|>", ["<|eot_id|>"], _LLAMA3_CHAT, True
    elif style == "qwen":
        sp = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = _byte_level(sp, None, 400, _QWEN2_SPLIT, nfc=True)
        bos, eos, eog, tmpl, add_bos = None, "<|im_end|>", ["<|endoftext|>"], _CHATML, False
    elif style in ("llama2", "phi3"):
        added = ["<|assistant|>", "<|end|>", "<|user|>", "<|system|>"] if style == "phi3" else []
        add_bos = style == "llama2"
        tok = _sentencepiece_bpe(["<unk>", "<s>", "</s>"], added, True, "<s>" if add_bos else None, 420)
        bos, eos = "<s>", "</s>"
        eog, tmpl = (["<|end|>"], _PHI3_CHAT) if style == "phi3" else ([], _LLAMA2_CHAT)
    elif style == "gemma":
        tok = _sentencepiece_bpe(["<pad>", "<eos>", "<bos>", "<unk>"], ["<start_of_turn>", "<end_of_turn>"],
                                 False, "<bos>", 420)
        bos, eos, eog, tmpl, add_bos = "<bos>", "<eos>", ["<end_of_turn>"], _GEMMA_CHAT, True
    else:
        raise ValueError(f"unknown tokenizer style {style!r}")
    ids = {"bos": tok.token_to_id(bos) if bos else None, "eos": tok.token_to_id(eos),
           "eog": [tok.token_to_id(t) for t in eog]}
    pad = "<pad>" if style == "gemma" else None
    ids["pad"] = tok.token_to_id(pad) if pad else None
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos, "pad_token": pad,
           "unk_token": "<unk>" if style in ("llama2", "phi3", "gemma") else None,
           "add_bos_token": add_bos, "add_eos_token": False, "chat_template": tmpl,
           "clean_up_tokenization_spaces": False, "model_max_length": 4096}
    return tok, cfg, ids


# ----------------------------------------------------------------------------- safetensors

def _encode(a: np.ndarray, dtype: str) -> tuple[bytes, str, np.ndarray]:
    """(bytes, safetensors dtype, the float64 values those bytes hold)."""
    a = np.asarray(a, np.float32)
    if dtype == "f32":
        return a.tobytes(), "F32", a.astype(np.float64)
    if dtype == "f16":
        h = a.astype(np.float16)
        return h.tobytes(), "F16", h.astype(np.float64)
    if dtype == "bf16":
        b = f32_to_bf16(a)
        return b.tobytes(), "BF16", bf16_to_f32(b).astype(np.float64)
    raise ValueError(f"dtype {dtype!r}: one of {DTYPES}")


def write_safetensors(path, tensors: dict, dtype: str = "f32") -> dict:
    """Write {name: array} as one safetensors file in `dtype`; returns {name: float64 stored values}."""
    header, blobs, stored, at = {}, [], {}, 0
    for name, a in tensors.items():
        data, st, vals = _encode(a, dtype)
        header[name] = {"dtype": st, "shape": list(np.shape(a)), "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        stored[name] = vals.reshape(np.shape(a))
        at += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return stored


# ----------------------------------------------------------------------------- configs

_HF_CLASS = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
             "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
             "gemma3": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM"}
_MODEL_TYPE = {"gemma3": "gemma3_text"}
_TOKENIZER = {"llama": "llama3", "mistral": "llama2", "qwen2": "qwen", "qwen3": "qwen", "gemma": "gemma",
              "gemma2": "gemma", "gemma3": "gemma", "phi3": "phi3"}


def hf_config(arch: str, n_vocab: int, ids: dict, *, schema: int = 4, dtype: str = "f32",
              rng: np.random.Generator | None = None) -> dict:
    """A config.json dict for the tiny model of `arch` in the transformers-4 or -5 schema."""
    dim, n_heads, n_kv, hidden, layers = 64, 4, 2, 160, 2
    c = {"architectures": [_HF_CLASS[arch]], "model_type": _MODEL_TYPE.get(arch, arch),
         "vocab_size": n_vocab, "hidden_size": dim, "intermediate_size": hidden,
         "num_hidden_layers": layers, "num_attention_heads": n_heads, "num_key_value_heads": n_kv,
         "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
         "tie_word_embeddings": False, "attention_bias": False, "attention_dropout": 0.0,
         "initializer_range": 0.02, "use_cache": True,
         "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"],
         "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype]}
    theta, scaling, local_theta, types = 10000.0, None, None, None
    if arch == "llama":
        scaling = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64}
        c["head_dim"] = dim // n_heads
    elif arch == "mistral":
        c.update(sliding_window=8, head_dim=None)      # every layer windowed; no layer_types
    elif arch == "qwen2":
        theta = 1e6
        c.update(rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=None, max_window_layers=layers)
        c["attention_bias"] = True
        types = ["full_attention"] * layers
    elif arch == "qwen3":
        theta = 1e6
        c.update(rms_norm_eps=1e-6, head_dim=24, tie_word_embeddings=True, use_sliding_window=False,
                 sliding_window=None, max_window_layers=layers)
        types = ["full_attention"] * layers
    elif arch in ("gemma", "gemma2", "gemma3"):
        c.update(hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                 tie_word_embeddings=True, head_dim=16, intermediate_size=128)
        if arch == "gemma":
            c["num_key_value_heads"] = 1
        if arch == "gemma2":
            c.update(num_hidden_layers=3, query_pre_attn_scalar=24, sliding_window=8,
                     attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
            types = ["sliding_attention" if l % 2 == 0 else "full_attention" for l in range(3)]
        if arch == "gemma3":
            theta, local_theta = 1e6, 10000.0
            scaling = {"rope_type": "linear", "factor": 8.0}
            c.update(num_hidden_layers=6, head_dim=32, query_pre_attn_scalar=48, sliding_window=8,
                     attn_logit_softcapping=None, final_logit_softcapping=None,
                     use_bidirectional_attention=False)
            types = ["sliding_attention" if (l + 1) % 6 else "full_attention" for l in range(6)]
    elif arch == "phi3":
        rng = rng or np.random.default_rng(0)
        half = (dim // n_heads) // 2
        # float32 values, as Phi-3's published configs print them (1.0800000429153442): the GGUF
        # stores the factors as float32, and a rounded factor moves angles of late positions by ~1e-7
        f32 = lambda x: [float(v) for v in np.round(x, 4).astype(np.float32)]
        scaling = {"rope_type": "longrope", "short_factor": f32(1.0 + rng.random(half)),
                   "long_factor": f32(1.0 + 7.0 * rng.random(half))}
        c.update(original_max_position_embeddings=64, sliding_window=None, resid_pdrop=0.0,
                 embd_pdrop=0.0, partial_rotary_factor=1.0)
    if schema == 4:
        c["rope_theta"] = theta
        # transformers 4 configs as published: Phi-3 {"type": "longrope", ...}; others "rope_type"
        if scaling and arch == "phi3":
            scaling = {("type" if k == "rope_type" else k): v for k, v in scaling.items()}
        c["rope_scaling"] = scaling
        if arch == "gemma3":
            c["rope_local_base_freq"] = local_theta
            c["sliding_window_pattern"] = 6
        c["transformers_version"] = "4.51.3"
    elif schema == 5:
        if arch == "gemma3":
            c["rope_parameters"] = {"full_attention": dict(scaling, rope_theta=theta),
                                    "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}}
        else:
            rp = dict(scaling or {"rope_type": "default"}, rope_theta=theta)
            if arch == "phi3":
                rp["original_max_position_embeddings"] = c["original_max_position_embeddings"]
            c["rope_parameters"] = rp
        if types is not None:
            c["layer_types"] = types
        c["dtype"] = c.pop("torch_dtype")
        c["transformers_version"] = "5.0.0"
    else:
        raise ValueError("schema: 4 or 5")
    return c


# ----------------------------------------------------------------------------- weights

def _weights(arch: str, c: dict, rng: np.random.Generator) -> dict:
    dim, hidden = c["hidden_size"], c["intermediate_size"]
    n_heads, n_kv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or dim // n_heads
    gemma = arch.startswith("gemma")

    def lin(n_out, n_in):
        return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)

    def norm(n):
        return 0.1 * rng.standard_normal(n) + (0.0 if gemma else 1.0)

    def bias(n):
        return 0.1 * rng.standard_normal(n)

    w = {"model.embed_tokens.weight": rng.standard_normal((c["vocab_size"], dim))}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(dim)
        if arch == "phi3":
            w[p + "self_attn.qkv_proj.weight"] = lin((n_heads + 2 * n_kv) * hd, dim)
        else:
            w[p + "self_attn.q_proj.weight"] = lin(n_heads * hd, dim)
            w[p + "self_attn.k_proj.weight"] = lin(n_kv * hd, dim)
            w[p + "self_attn.v_proj.weight"] = lin(n_kv * hd, dim)
        if c.get("attention_bias") and arch == "qwen2":
            w[p + "self_attn.q_proj.bias"] = bias(n_heads * hd)
            w[p + "self_attn.k_proj.bias"] = bias(n_kv * hd)
            w[p + "self_attn.v_proj.bias"] = bias(n_kv * hd)
        if arch in ("qwen3", "gemma3"):
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "self_attn.o_proj.weight"] = lin(dim, n_heads * hd)
        w[p + "post_attention_layernorm.weight"] = norm(dim)
        if arch in ("gemma2", "gemma3"):
            w[p + "pre_feedforward_layernorm.weight"] = norm(dim)
            w[p + "post_feedforward_layernorm.weight"] = norm(dim)
        if arch == "phi3":
            w[p + "mlp.gate_up_proj.weight"] = lin(2 * hidden, dim)
        else:
            w[p + "mlp.gate_proj.weight"] = lin(hidden, dim)
            w[p + "mlp.up_proj.weight"] = lin(hidden, dim)
        w[p + "mlp.down_proj.weight"] = lin(dim, hidden)
    w["model.norm.weight"] = norm(dim)
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = lin(c["vocab_size"], dim)
    return w


def make_hf_model(path, arch: str, *, seed: int, dtype: str = "f32", schema: int = 4,
                  sharded: bool = False) -> dict:
    """Write a tiny random HF folder for `arch` at `path`; returns {"path", "arch", "config",
    "state_dict" (HF names, float64, the stored values), "tokenizer_config",
    "generation_config", "token_ids" (bos/eos/pad/eog)}."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tok, tok_cfg, ids = build_tokenizer(_TOKENIZER[arch])
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    n_vocab = n_tok + 9 if arch == "phi3" else n_tok         # phi3: embedding rows past the vocabulary
    cfg = hf_config(arch, n_vocab, ids, schema=schema, dtype=dtype, rng=rng)
    w = _weights(arch, cfg, rng)
    if sharded:
        names = list(w)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half],
                  "model-00002-of-00002.safetensors": names[half:]}
        stored, wmap = {}, {}
        for fname, part in shards.items():
            stored.update(write_safetensors(path / fname, {n: w[n] for n in part}, dtype))
            wmap.update({n: fname for n in part})
        total = sum(int(np.prod(v.shape)) * (4 if dtype == "f32" else 2) for v in w.values())
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}, indent=2))
    else:
        stored = write_safetensors(path / "model.safetensors", w, dtype)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    eos = [ids["eos"]] + [i for i in ids["eog"] if i != ids["eos"]]
    gen = {"bos_token_id": ids["bos"], "eos_token_id": eos if len(eos) > 1 else eos[0],
           "pad_token_id": ids["pad"], "do_sample": True, "temperature": 0.6, "top_p": 0.9,
           "transformers_version": cfg["transformers_version"]}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return {"path": path, "arch": arch, "config": cfg, "state_dict": stored, "tokenizer_config": tok_cfg,
            "generation_config": gen, "token_ids": ids, "n_tokenizer_vocab": n_tok}



# ----------------------------------------------------------------------------- as GGUF

def to_gguf(hf: dict, path, *, neox_override: bool = False) -> None:
    """Write the model of `hf` (make_hf_model's result) as the GGUF llama.cpp's converter would
    (written with the `gguf` package, not torchless): GGUF names, Gemma norms + 1, LLaMA/Mistral
    q/k un-permuted to adjacent pairs (`neox_override=True`: left in rotate-half order with
    `torchless.rope.neox = true` instead), LongRoPE factors as tensors, the
    architecture keys (sliding window and pattern, soft-caps, attention scale, local RoPE base,
    rope scaling, magnitude factor). The vocabulary is a minimal SentencePiece one padded to
    the embedding rows (the logits do not depend on it)."""
    import gguf

    from .forward import longrope_attn_factor
    from .hf import from_hf
    from .synth import vocabulary

    cfg = hf["config"]
    c, w = from_hf(cfg, hf["state_dict"], gguf_order=not neox_override)
    arch = c.arch
    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_name(f"synthetic-hf-{hf['arch']}")
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(c.dim)
    wr.add_block_count(c.n_layers)
    wr.add_feed_forward_length(c.hidden_dim)
    wr.add_head_count(c.n_heads)
    wr.add_head_count_kv(c.n_kv_heads)
    wr.add_key_length(c.head_dim)
    wr.add_value_length(c.head_dim_v)
    wr.add_rope_dimension_count(c.rope_dim)
    wr.add_rope_freq_base(c.rope_theta)
    wr.add_layer_norm_rms_eps(c.norm_eps)
    wr.add_file_type(0)
    if c.rope_scaling == "linear":
        wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        wr.add_rope_scaling_factor(c.rope_factor)
    if c.rope_scaling == "llama3":       # llama.cpp: per-pair divisors in rope_freqs.weight
        from .forward import llama3_rope_factors

        w["rope_freqs.weight"] = llama3_rope_factors(c.rope_dim, c.rope_theta, c.rope_factor, c.rope_low_freq_factor,
                                                     c.rope_high_freq_factor, c.rope_orig_ctx)
    if c.rope_scaling == "longrope":
        wr.add_rope_scaling_orig_ctx_len(c.rope_orig_ctx)
        wr.add_rope_scaling_attn_factors(longrope_attn_factor(cfg["max_position_embeddings"], c.rope_orig_ctx))
    if c.sliding_window:
        wr.add_sliding_window(c.sliding_window)
        default = {"gemma2": 2, "gemma3": 6}.get(arch)
        flags = [c.windowed(l) for l in range(c.n_layers)]
        if default is None and not all(flags) or default is not None and flags != [
                l % default < default - 1 for l in range(c.n_layers)]:
            wr.add_sliding_window_pattern(flags)
    theta_swa, _ = c.swa_rope()
    if arch == "gemma3" and theta_swa != 10000.0 or arch != "gemma3" and c.rope_theta_swa:
        wr.add_rope_freq_base_swa(theta_swa)
    if c.attn_scale and abs(c.attn_scale - c.head_dim ** -0.5) > 1e-12:
        wr.add_attention_scale(c.attn_scale)
    if arch in ("gemma2", "gemma3") or c.attn_softcap:
        if c.attn_softcap or arch == "gemma2":
            wr.add_attn_logit_softcapping(c.attn_softcap)
        if c.final_softcap or arch == "gemma2":
            wr.add_final_logit_softcapping(c.final_softcap)
    if neox_override and arch == "llama":
        wr.add_bool("torchless.rope.neox", True)
    tokens, scores, types = vocabulary()
    pad = c.n_vocab - len(tokens)
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens + [f"[PAD{i}]" for i in range(pad)])
    wr.add_token_scores([float(s) for s in scores] + [-10000.0] * pad)
    wr.add_token_types([int(t) for t in types] + [5] * pad)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)
    for name, a in w.items():
        wr.add_tensor(name, np.ascontiguousarray(a, np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
