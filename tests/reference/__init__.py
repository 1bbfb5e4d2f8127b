"""Independent NumPy oracles for the engine's numerics (no code shared with csrc/).

forward.py  float64 decoder forward pass (LLaMA / Qwen2 / Qwen3 families) read with the
            `gguf` package; synth.py  seeded random test models written as GGUF files.
"""
