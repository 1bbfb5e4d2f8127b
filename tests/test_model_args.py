"""ModelArgs: Meta reference defaults and derivations, HF aliases, validation, config files, GGUF."""

import dataclasses
import inspect
import json

import pytest

import torchless
from torchless import ModelArgs
from torchless.gguf import Value

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


def test_defaults_are_the_reference_ones():
    a = ModelArgs()
    assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.vocab_size) == (4096, 32, 32, None, -1)
    assert (a.multiple_of, a.ffn_dim_multiplier, a.norm_eps, a.rope_theta) == (256, None, 1e-5, 500000.0)
    assert (a.max_batch_size, a.max_seq_len) == (32, 2048)
    assert (a.hidden_dim, a.head_dim, a.arch, a.rope_style, a.rope_scaling) == (None, None, "llama", None, None)
    assert (a.tie_word_embeddings, a.qkv_bias, a.qk_norm) == (False, False, False)
    assert [f.name for f in dataclasses.fields(ModelArgs)][:11] == [
        "dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier",
        "norm_eps", "rope_theta", "max_batch_size", "max_seq_len"]


def test_derived_values():
    a = ModelArgs()
    assert a.resolved_hidden_dim == 11008  # LLaMA-7B: int(2 * 16384 / 3) = 10922 -> 11008
    assert a.resolved_head_dim == 128
    assert a.resolved_n_kv_heads == 32
    assert a.resolved_rope_style == "norm"
    assert a.hidden_dim is None and a.head_dim is None  # the fields keep "not given"


def test_llama3_8b_params():
    a = ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256, multiple_of=1024,
                  ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0)
    assert a.resolved_hidden_dim == 14336
    assert a.resolved_n_kv_heads == 8 and a.resolved_head_dim == 128


@pytest.mark.parametrize("dim, mult, multiple_of, expected", [
    (4096, None, 256, 11008),      # LLaMA-2 7B
    (5120, None, 256, 13824),      # LLaMA-2 13B
    (8192, 1.3, 4096, 28672),      # LLaMA-2 70B
    (2048, 1.5, 256, 8192),        # LLaMA-3.2 1B
    (288, None, 32, 768),          # stories15M
])
def test_hidden_dim_derivation(dim, mult, multiple_of, expected):
    a = ModelArgs(dim=dim, n_heads=dim // 64 if dim % 64 == 0 else 6, ffn_dim_multiplier=mult, multiple_of=multiple_of)
    assert a.resolved_hidden_dim == expected


def test_explicit_hidden_and_head_dim_win():
    a = ModelArgs(dim=640, n_heads=4, n_kv_heads=1, head_dim=256, hidden_dim=2048)
    assert a.resolved_head_dim == 256 and a.resolved_hidden_dim == 2048
    # head_dim given: n_heads need not divide dim
    assert ModelArgs(dim=100, n_heads=3, head_dim=32).resolved_head_dim == 32


def test_rope_style_by_arch():
    assert ModelArgs(arch="qwen2").resolved_rope_style == "neox"
    assert ModelArgs(arch="qwen3").resolved_rope_style == "neox"
    assert ModelArgs(arch="llama", rope_style="neox").resolved_rope_style == "neox"


def test_hf_aliases():
    a = ModelArgs(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                  intermediate_size=1536, rms_norm_eps=1e-6, max_position_embeddings=8192, head_dim=64)
    assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.hidden_dim, a.norm_eps, a.max_seq_len, a.head_dim) == \
        (576, 30, 9, 3, 1536, 1e-6, 8192, 64)
    assert a == ModelArgs(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, hidden_dim=1536, norm_eps=1e-6,
                          max_seq_len=8192, head_dim=64)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="bogus"):
        ModelArgs(bogus=1)
    with pytest.raises(TypeError, match="hidden_act"):
        ModelArgs(dim=64, n_heads=4, hidden_act="silu")


@pytest.mark.parametrize("name, alias", [("dim", "hidden_size"), ("n_layers", "num_hidden_layers"),
                                         ("n_heads", "num_attention_heads"), ("n_kv_heads", "num_key_value_heads"),
                                         ("hidden_dim", "intermediate_size"), ("norm_eps", "rms_norm_eps"),
                                         ("max_seq_len", "max_position_embeddings")])
def test_name_and_alias_together_is_a_type_error(name, alias):
    with pytest.raises(TypeError, match=alias):
        ModelArgs(**{name: 4, alias: 4})


def test_constructor_signature_and_replace():
    params = inspect.signature(ModelArgs).parameters
    assert "dim" in params and "qk_norm" in params
    a = dataclasses.replace(ModelArgs(), dim=2048)
    assert a.dim == 2048 and a.resolved_hidden_dim == 5632


@pytest.mark.parametrize("kwargs, field", [
    (dict(dim=0), "dim"),
    (dict(dim=-4), "dim"),
    (dict(dim=4.0), "dim"),
    (dict(n_layers=0), "n_layers"),
    (dict(n_heads=0), "n_heads"),
    (dict(n_heads=True), "n_heads"),
    (dict(n_kv_heads=0), "n_kv_heads"),
    (dict(n_kv_heads=5), "n_kv_heads"),
    (dict(dim=4096, n_heads=48), "n_heads"),
    (dict(head_dim=0), "head_dim"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(vocab_size=-2), "vocab_size"),
    (dict(multiple_of=0), "multiple_of"),
    (dict(ffn_dim_multiplier=0.0), "ffn_dim_multiplier"),
    (dict(ffn_dim_multiplier=-1.3), "ffn_dim_multiplier"),
    (dict(ffn_dim_multiplier=float("nan")), "ffn_dim_multiplier"),
    (dict(hidden_dim=0), "hidden_dim"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(norm_eps=float("inf")), "norm_eps"),
    (dict(norm_eps=float("nan")), "norm_eps"),
    (dict(rope_theta=0.0), "rope_theta"),
    (dict(rope_theta=-1.0), "rope_theta"),
    (dict(max_batch_size=0), "max_batch_size"),
    (dict(max_seq_len=0), "max_seq_len"),
    (dict(arch="mamba"), "arch"),
    (dict(rope_style="gptj"), "rope_style"),
    (dict(qkv_bias=1), "qkv_bias"),
    (dict(rope_scaling="llama3"), "rope_scaling"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_type"),
    (dict(rope_scaling={"factor": 4.0}), "rope_type"),
    (dict(rope_scaling={"rope_type": "linear"}), "factor"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 0.0}), "factor"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0, "beta_fast": 32}), "beta_fast"),
    (dict(rope_scaling={**LLAMA3_SCALING, "low_freq_factor": -1.0}), "low_freq_factor"),
    (dict(rope_scaling={**LLAMA3_SCALING, "high_freq_factor": 1.0}), "high_freq_factor"),
    (dict(rope_scaling={k: v for k, v in LLAMA3_SCALING.items() if k != "high_freq_factor"}), "high_freq_factor"),
    (dict(rope_scaling={**LLAMA3_SCALING, "original_max_position_embeddings": 0}),
     "original_max_position_embeddings"),
])
def test_validation_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelArgs(**kwargs)


def test_vocab_set_later_and_require_vocab():
    a = ModelArgs()
    assert a.validate() is a
    with pytest.raises(ValueError, match="vocab_size"):
        a.validate(require_vocab=True)
    a.vocab_size = 32000  # the reference sets it after reading the tokenizer
    assert a.validate(require_vocab=True) is a


def test_validate_after_mutation():
    a = ModelArgs()
    a.n_kv_heads = 7
    with pytest.raises(ValueError, match="n_kv_heads"):
        a.validate()


def test_valid_rope_scaling_is_copied():
    rs = dict(LLAMA3_SCALING)
    a = ModelArgs(rope_scaling=rs)
    rs["factor"] = 16.0
    assert a.rope_scaling["factor"] == 8.0
    assert ModelArgs(rope_scaling={"rope_type": "linear", "factor": 2.0}).rope_scaling["factor"] == 2.0


# ---- config files -------------------------------------------------------------------------------

def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_meta_params_json_llama3_8b(tmp_path):
    params = {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
              "multiple_of": 1024, "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0}
    a = ModelArgs.from_config_file(_write(tmp_path, "params.json", params))
    assert a.resolved_hidden_dim == 14336 and a.n_kv_heads == 8 and a.vocab_size == 128256
    assert a.arch == "llama" and a.rope_scaling is None and a.max_seq_len == 2048
    # the folder works too, and overrides win (the reference passes max_seq_len beside params)
    b = ModelArgs.from_config_file(tmp_path, max_seq_len=512, max_batch_size=4)
    assert (b.max_seq_len, b.max_batch_size, b.dim) == (512, 4, 4096)


def test_meta_params_json_llama2_vocab_later(tmp_path):
    params = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": -1}
    a = ModelArgs.from_config_file(_write(tmp_path, "params.json", params))
    assert a.vocab_size == -1 and a.resolved_hidden_dim == 11008 and a.norm_eps == 1e-6


def test_meta_params_json_use_scaled_rope(tmp_path):
    params = {"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
              "ffn_dim_multiplier": 1.5, "multiple_of": 256, "norm_eps": 1e-05, "rope_theta": 500000.0,
              "use_scaled_rope": True}
    a = ModelArgs.from_config_file(_write(tmp_path, "params.json", params))
    assert a.rope_scaling == LLAMA3_SCALING and a.resolved_hidden_dim == 8192
    params["rope_scaling_factor"] = 32.0
    assert ModelArgs.from_config_file(_write(tmp_path, "params.json", params)).rope_scaling["factor"] == 32.0


def test_meta_params_json_unknown_key(tmp_path):
    with pytest.raises(TypeError, match="moe_experts"):
        ModelArgs.from_config_file(_write(tmp_path, "params.json", {"dim": 64, "n_heads": 4, "moe_experts": 8}))


LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True, "attention_bias": False, "vocab_size": 128256, "torch_dtype": "bfloat16",
}


def test_hf_llama_config(tmp_path):
    a = ModelArgs.from_config_file(_write(tmp_path, "config.json", LLAMA_CONFIG))
    assert (a.arch, a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.hidden_dim, a.head_dim) == \
        ("llama", 2048, 16, 32, 8, 8192, 64)
    assert (a.vocab_size, a.max_seq_len, a.norm_eps, a.rope_theta) == (128256, 131072, 1e-5, 500000.0)
    assert a.rope_scaling == {**LLAMA3_SCALING, "factor": 32.0}
    assert a.tie_word_embeddings and not a.qkv_bias and not a.qk_norm
    assert a.resolved_rope_style == "norm"
    assert ModelArgs.from_config_file(tmp_path) == a  # folder


def test_hf_llama_config_linear_legacy_type_and_defaults(tmp_path):
    cfg = {k: v for k, v in LLAMA_CONFIG.items() if k not in ("rope_theta", "head_dim", "tie_word_embeddings")}
    cfg["rope_scaling"] = {"type": "linear", "factor": 4.0}
    cfg["attention_bias"] = True
    a = ModelArgs.from_config_file(_write(tmp_path, "config.json", cfg))
    assert a.rope_scaling == {"rope_type": "linear", "factor": 4.0}
    assert a.rope_theta == 10000.0 and a.head_dim is None and a.resolved_head_dim == 64
    assert not a.tie_word_embeddings and a.qkv_bias


def test_hf_mistral_is_llama(tmp_path):
    cfg = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": None, "rope_theta": 1000000.0,
           "rms_norm_eps": 1e-05, "max_position_embeddings": 32768, "vocab_size": 32768, "sliding_window": None}
    a = ModelArgs.from_config_file(_write(tmp_path, "config.json", cfg))
    assert a.arch == "llama" and a.head_dim is None and a.resolved_head_dim == 128 and a.rope_theta == 1e6


def test_hf_qwen2_config(tmp_path):
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
           "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
           "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
           "rope_scaling": None, "sliding_window": 32768, "tie_word_embeddings": True, "vocab_size": 151936}
    a = ModelArgs.from_config_file(_write(tmp_path, "config.json", cfg))
    assert (a.arch, a.dim, a.n_heads, a.n_kv_heads, a.resolved_head_dim, a.hidden_dim) == \
        ("qwen2", 896, 14, 2, 64, 4864)
    assert a.qkv_bias and not a.qk_norm and a.tie_word_embeddings and a.rope_scaling is None
    assert a.resolved_rope_style == "neox"
    # rope_type "default" means no scaling; a yarn config is refused
    cfg["rope_scaling"] = {"rope_type": "default"}
    assert ModelArgs.from_config_file(_write(tmp_path, "config.json", cfg)).rope_scaling is None
    cfg["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    with pytest.raises(ValueError, match="yarn"):
        ModelArgs.from_config_file(_write(tmp_path, "config.json", cfg))


def test_hf_qwen3_config(tmp_path):
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "head_dim": 128,
           "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
           "max_position_embeddings": 40960, "rms_norm_eps": 1e-06, "rope_theta": 1000000, "attention_bias": False,
           "rope_scaling": {"rope_type": "linear", "factor": 2.0, "original_max_position_embeddings": 40960},
           "tie_word_embeddings": True, "vocab_size": 151936}
    a = ModelArgs.from_config_file(_write(tmp_path, "config.json", cfg))
    assert (a.arch, a.dim, a.head_dim, a.resolved_head_dim) == ("qwen3", 1024, 128, 128)
    assert a.qk_norm and not a.qkv_bias and a.rope_theta == 1e6
    assert a.rope_scaling == {"rope_type": "linear", "factor": 2.0, "original_max_position_embeddings": 40960}
    md = a.to_gguf_metadata()
    assert md["qwen3.attention.key_length"] == Value(128, "uint32")  # 1024 / 16 = 64 != 128
    assert md["qwen3.rope.scaling.type"] == "linear"
    assert md["qwen3.rope.scaling.factor"] == Value(2.0, "float32")
    assert md["qwen3.rope.scaling.original_context_length"] == Value(40960, "uint32")
    assert ModelArgs.from_gguf_metadata(md, qk_norm=True) == dataclasses.replace(a, tie_word_embeddings=False)


def test_hf_transformers5_rope_parameters(tmp_path):
    cfg = {k: v for k, v in LLAMA_CONFIG.items() if k not in ("rope_theta", "rope_scaling")}
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 250000.0}
    a = ModelArgs.from_config_file(_write(tmp_path, "config.json", cfg))
    assert a.rope_theta == 250000.0 and a.rope_scaling is None


def test_hf_unknown_model_type(tmp_path):
    with pytest.raises(ValueError, match="gemma3.*llama, mistral, qwen2, qwen3"):
        ModelArgs.from_config_file(_write(tmp_path, "config.json", {"model_type": "gemma3", "hidden_size": 640}))


def test_config_folder_without_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        ModelArgs.from_config_file(tmp_path)


# ---- GGUF ----------------------------------------------------------------------------------------

def test_to_gguf_metadata_types_and_keys():
    a = ModelArgs(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, hidden_dim=1536, vocab_size=49152,
                  max_seq_len=8192, rope_theta=100000.0, norm_eps=1e-5)
    md = a.to_gguf_metadata()
    assert md == {
        "general.architecture": "llama",
        "llama.vocab_size": Value(49152, "uint32"),
        "llama.context_length": Value(8192, "uint32"),
        "llama.embedding_length": Value(576, "uint32"),
        "llama.block_count": Value(30, "uint32"),
        "llama.feed_forward_length": Value(1536, "uint32"),
        "llama.attention.head_count": Value(9, "uint32"),
        "llama.attention.head_count_kv": Value(3, "uint32"),
        "llama.rope.dimension_count": Value(64, "uint32"),
        "llama.attention.layer_norm_rms_epsilon": Value(1e-5, "float32"),
        "llama.rope.freq_base": Value(100000.0, "float32"),
    }
    assert "llama.vocab_size" not in ModelArgs().to_gguf_metadata()  # -1: not known yet
    assert ModelArgs().to_gguf_metadata()["llama.feed_forward_length"] == Value(11008, "uint32")


def test_gguf_llama3_scaling_round_trip():
    a = ModelArgs(n_kv_heads=8, vocab_size=128256, hidden_dim=14336, rope_scaling=LLAMA3_SCALING)
    md = a.to_gguf_metadata()
    assert md["llama.rope.scaling.type"] == "llama3"
    assert md["llama.rope.scaling.low_freq_factor"] == Value(1.0, "float32")
    assert md["llama.rope.scaling.high_freq_factor"] == Value(4.0, "float32")
    assert md["llama.rope.scaling.original_context_length"] == Value(8192, "uint32")
    b = ModelArgs.from_gguf_metadata({k: v.value if isinstance(v, Value) else v for k, v in md.items()})
    assert b.rope_scaling == LLAMA3_SCALING
    assert b.to_gguf_metadata() == md


def test_gguf_rope_style_not_representable():
    with pytest.raises(ValueError, match="rope_style"):
        ModelArgs(rope_style="neox").to_gguf_metadata()
    assert "llama.rope.freq_base" in ModelArgs(rope_style="norm").to_gguf_metadata()


def test_from_gguf_metadata_errors_and_defaults():
    with pytest.raises(ValueError, match="mamba.*llama, qwen2, qwen3, gemma, gemma2, gemma3, phi3"):
        ModelArgs.from_gguf_metadata({"general.architecture": "mamba"})
    with pytest.raises(ValueError, match="block_count"):
        ModelArgs.from_gguf_metadata({"general.architecture": "llama", "llama.embedding_length": 64})
    md = {"general.architecture": "qwen2", "qwen2.embedding_length": 64, "qwen2.block_count": 2,
          "qwen2.attention.head_count": 4, "qwen2.feed_forward_length": 128}
    a = ModelArgs.from_gguf_metadata(md)
    assert (a.n_kv_heads, a.max_seq_len, a.norm_eps, a.rope_theta, a.vocab_size) == (4, 2048, 1e-5, 10000.0, -1)
    assert a.qkv_bias and a.resolved_rope_style == "neox"
    md["qwen2.rope.dimension_count"] = 8
    with pytest.raises(ValueError, match="dimension_count"):
        ModelArgs.from_gguf_metadata(md)


def test_fixture_gguf(fixtures):
    f = torchless.load(fixtures / "stories260K" / "stories260K.derived-f32.gguf")
    a = ModelArgs.from_gguf_metadata(f.metadata, tensor_names=f.tensors)
    m = torchless.Model(fixtures / "stories260K" / "stories260K.derived-f32.gguf")
    c = m.config
    assert (a.dim, a.n_layers, a.n_heads, a.resolved_n_kv_heads, a.resolved_hidden_dim, a.resolved_head_dim) == \
        (c["dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"], c["hidden_dim"], c["head_dim"])
    assert a.vocab_size == c["n_vocab"] and a.tie_word_embeddings == c["tied_embeddings"]


@pytest.mark.model
def test_smollm2_gguf_round_trip(smollm2_path):
    f = torchless.load(smollm2_path)
    md, types = f.metadata, f.metadata_types
    a = ModelArgs.from_gguf_metadata(md, tensor_names=f.tensors)
    assert (a.arch, a.dim, a.n_layers, a.n_heads, a.n_kv_heads) == ("llama", 576, 30, 9, 3)
    assert (a.hidden_dim, a.resolved_head_dim, a.head_dim, a.vocab_size) == (1536, 64, None, 49152)
    assert len(md["tokenizer.ggml.tokens"]) == 49152
    assert (a.max_seq_len, a.rope_theta, a.norm_eps) == (8192, 100000.0, 1e-5)
    assert a.tie_word_embeddings and not a.qkv_bias and a.rope_scaling is None
    out = a.to_gguf_metadata()
    for key, v in out.items():
        assert key in md, key
        if isinstance(v, Value):
            assert (v.value, v.type) == (pytest.approx(md[key], rel=1e-7), types[key]), key
        else:
            assert v == md[key], key
    # every model key of the file that ModelArgs knows about comes back
    assert {k for k in md if k.startswith("llama.")} <= set(out)
    assert ModelArgs.from_gguf_metadata({k: (v.value if isinstance(v, Value) else v) for k, v in out.items()},
                                        tensor_names=f.tensors) == a
