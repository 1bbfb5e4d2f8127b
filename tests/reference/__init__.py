"""Independent NumPy oracles for the engine's numerics (no code shared with csrc/).

forward.py   float64 decoder forward pass (LLaMA/Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3,
             Phi-3) on GGUF names and semantics, read from GGUF with the `gguf` package;
hf.py        Hugging Face folders / state dicts (HF names and semantics, both config schemas)
             into the reference's inputs;
synth.py     seeded random test models written as GGUF files;
hf_synth.py  seeded random tiny HF folders per architecture (config, safetensors F32/F16/BF16,
             sharded, tokenizer files), and the same models as GGUF (`to_gguf`).
"""
