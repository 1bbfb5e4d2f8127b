"""`Model`: the thin engine object — a model (GGUF, .tl, llama2.c checkpoint) with its KV cache, logits as NumPy
arrays, and text generation that runs in C (one GIL round trip per token)."""

from __future__ import annotations

import os
import secrets
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from . import _C, chat, hub


# Models loaded from the same file share one mapping (weights, tokenizer): each new Model gets
# its own context (KV cache, threads) over the weights of a live one.
_loaded: "weakref.WeakValueDictionary[tuple, Model]" = weakref.WeakValueDictionary()


def _file_key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Model(_C.Model):
    """Model(path_or_name, max_seq_len=0, max_batch_size=1, n_threads=None, kv_dtype="f16", tokenizer_path=None,
    device="auto")

    `device`: "auto" (the first GPU found, else the CPU), "cpu", "cuda[:N]", "hip[:N]" or
    "opencl[:N]"; weights, activations and the KV cache live there (`torchless.backends()`
    lists what was found). `kv_dtype`: the KV cache's "f16", "f32", or "q8_0" (CPU only, heads of a
    multiple of 32: about half of F16's memory and reads, keys and values rounded to 8 bits a block
    of 32 as llama.cpp's `--cache-type-k/-v q8_0`). `n_threads` (None: the physical cores) runs the forward passes and, on the
    CPU, the copies of the weights made at load. `tokenizer_path` names a tokenizer to use instead of the file's own (a llama2.c checkpoint
    has none): a SentencePiece .model, a llama2.c tokenizer.bin, a GGUF or a .tl file.
    `forward(ids, start_pos=0, seq=0)` -> float32 (len(ids), n_vocab) logits of every position;
    `stream(prompt, ...)` yields text as it is generated; `generate(...)` returns it whole."""

    def __new__(cls, path: str | os.PathLike, max_seq_len: int = 0, max_batch_size: int = 1,
                n_threads: int | None = None, kv_dtype: str = "f16",
                tokenizer_path: str | os.PathLike | None = None, device: str = "auto"):
        path = os.fspath(path)
        if not os.path.exists(path):
            path = hub.resolve(path)
        if tokenizer_path is not None:
            tokenizer_path = os.fspath(tokenizer_path)
        key = _file_key(path)
        if key:  # one copy of the weights per device
            key = key + (device,)
        if key and tokenizer_path is not None:  # the same weights with another vocabulary: not shared
            key = key + (_file_key(tokenizer_path),)
        shared = _loaded.get(key) if key else None
        self = super().__new__(cls, path, max_seq_len, max_batch_size, n_threads, kv_dtype, shared,
                               tokenizer_path, device)
        if key:
            _loaded[key] = self
        self.tokenizer_path = tokenizer_path
        self._tokenizer = None
        self._metadata = None
        return self

    def __init__(self, *args, **kwargs):  # everything happens in __new__
        pass

    # ---- vocabulary and metadata

    @property
    def tokenizer(self):
        """The model's tokenizer (a torchless.Tokenizer: `tokenizer_path`'s, else the model
        file's), loaded on first use."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer

            self._tokenizer = Tokenizer(self.tokenizer_path if self.tokenizer_path is not None else self.path)
        return self._tokenizer

    @property
    def metadata(self) -> dict[str, Any]:
        """The model file's metadata without the tokenizer.ggml.* vocabulary arrays."""
        if self._metadata is None:
            self._metadata = {k: v for k, v in self.file_metadata(False).items() if not k.startswith("tokenizer.ggml.")}
        return self._metadata

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored in the file (tokenizer.chat_template), or None."""
        t = self.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) else None

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text for a conversation, rendered with the model's chat template."""
        template = self.chat_template
        if template is None:
            raise ValueError(f"{self.path}: the model has no chat template (tokenizer.chat_template)")
        tok = self.tokenizer
        bos = tok.token_text(tok.bos_id) if tok.bos_id >= 0 else ""
        eos = tok.token_text(tok.eos_id) if tok.eos_id >= 0 else ""
        return chat.render(template, messages, bos_token=bos, eos_token=eos, add_generation_prompt=add_generation_prompt)

    def encode_prompt(self, prompt: str | Sequence[int], add_bos: bool | None = None) -> list[int]:
        """Token ids of a prompt: ids pass through; text is encoded with special tokens
        recognised (chat markup), BOS per the vocabulary unless the text already starts with it."""
        if isinstance(prompt, str):
            tok = self.tokenizer
            if add_bos is None:
                add_bos = tok.add_bos
                if add_bos and tok.bos_id >= 0 and prompt.startswith(tok.token_text(tok.bos_id)):
                    add_bos = False  # a rendered chat template already begins with BOS
            ids = tok.encode(prompt, add_bos=add_bos, special=True)
        else:
            ids = [int(i) for i in prompt]
        if not ids:
            raise ValueError("the prompt is empty")
        return ids

    # ---- generation

    def steps(self, prompt: str | Sequence[int], *, max_new_tokens: int = 128, temperature: float = 0.8,
              top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
              presence_penalty: float = 0.0, frequency_penalty: float = 0.0, penalty_last_n: int = 64,
              seed: int | None = None, stop: Sequence[str] | str | None = None, add_bos: bool | None = None,
              special: bool = False, ignore_eog: bool = False, seq: int = 0) -> Iterator[tuple]:
        """(token, logprob, text, finish) for every generated token; text may be "" while
        it is held back (a possible stop string, half a UTF-8 character)."""
        for token, logprob, text, finish in self._iter(
                prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                min_p=min_p, repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
                frequency_penalty=frequency_penalty, penalty_last_n=penalty_last_n, seed=seed, stop=stop,
                add_bos=add_bos, special=special, ignore_eog=ignore_eog, seq=seq):
            yield token, logprob, text.decode("utf-8", errors="replace"), finish

    def _iter(self, prompt, *, max_new_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
              repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64, seed=None,
              stop=None, add_bos=None, special=False, ignore_eog=False, seq=0):
        """The C generation object for a prompt (defaults as in `steps`)."""
        ids = self.encode_prompt(prompt, add_bos)
        if seed is None:
            seed = secrets.randbits(64)
        if isinstance(stop, str):
            stop = [stop]
        return self.generate_iter(ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                  top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
                                  presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                  penalty_last_n=penalty_last_n, seed=seed % 2**64,
                                  stop=list(stop) if stop else None, ignore_eog=ignore_eog, special=special,
                                  seq=seq)

    def stream(self, prompt: str | Sequence[int], **kwargs) -> Iterator[str]:
        """Text pieces as they are generated (see `steps` for the options)."""
        for _, _, text, _ in self.steps(prompt, **kwargs):
            if text:
                yield text

    def generate(self, prompt: str | Sequence[int], **kwargs) -> str:
        """The whole generated text: the loop runs in C with the GIL released (see `steps`
        for the options)."""
        text, _, _ = self._iter(prompt, **kwargs).run()
        return text.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        c = self.config
        return (f"<torchless.Model {c['arch']} {self.path!r}: {c['n_layers']} layers, dim {c['dim']}, "
                f"vocab {c['n_vocab']}, context {self.max_seq_len} x {self.max_batch_size}>")
