"""Tokenizers: SentencePiece BPE (LLaMA 2, Mistral, Phi-3, Gemma) and byte-level BPE
(GPT-2, LLaMA 3, Qwen, SmolLM), read from a GGUF file, a SentencePiece ``.model`` or a
llama2.c ``tokenizer.bin``. Encoding and decoding run in C with the GIL released.

    tok = Tokenizer("tokenizer.model")
    ids = tok.encode("Hello world")          # [1, 15043, 3186]: BOS by the vocabulary's default
    tok.decode(ids)                          # 'Hello world'
"""

from __future__ import annotations

import os

from . import _C

__all__ = ["Tokenizer"]


class Tokenizer(_C.Tokenizer):
    """``Tokenizer(source)``: source is a path (str or os.PathLike) or an opened
    ``torchless.ModelFile``, whose tokenizer.ggml.* metadata is read."""

    def __new__(cls, source: str | os.PathLike | object) -> "Tokenizer":
        path = getattr(source, "path", None) if not isinstance(source, (str, bytes, os.PathLike)) else source
        if path is None:
            raise TypeError(f"Tokenizer: expected a path or a ModelFile, not {type(source).__name__}")
        return super().__new__(cls, path)

    def __init__(self, source: str | os.PathLike | object) -> None:  # the work is done in __new__
        pass
