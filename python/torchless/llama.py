"""`Llama`: Meta's reference `llama/generation.py` API on the engine.

    llm = Llama.build("smollm2-135m-instruct", max_seq_len=512, max_batch_size=4)
    tokens, logprobs = llm.generate([[1, 415, 5565], [1, 415]], max_gen_len=20, temperature=0.6,
                                    top_p=0.9, logprobs=True, echo=False)
    llm.text_completion(["The capital of France is"], max_gen_len=16)
    llm.chat_completion([[{"role": "user", "content": "Hi!"}]])

`generate` follows the reference loop: prompts of different lengths run together, positions
aligned, `total_len = min(max_seq_len, max_gen_len + max_prompt_len)`; sampling is the
reference's (softmax at the temperature, then the top-p nucleus), drawn with a seeded
torchless.Sampler; logprobs are -cross_entropy of the raw logits; `echo` returns the prompt too.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any, Iterator, Mapping, Sequence, TypedDict

import numpy as np

from . import _C
from .config import GenerationConfig
from .model import Model
from .transformer import Transformer


class CompletionPrediction(TypedDict, total=False):
    generation: str
    tokens: list[str]
    logprobs: list[float]


class ChatPrediction(TypedDict, total=False):
    generation: dict
    tokens: list[str]
    logprobs: list[float]


class TokenizerAPI:
    """The reference tokenizer's face: encode(s, bos, eos), decode(ids), n_words, bos_id, eos_id,
    pad_id (-1: none), stop_tokens."""

    def __init__(self, tok):
        self._tok = tok
        self.n_words = tok.n_vocab
        self.bos_id = tok.bos_id
        self.eos_id = tok.eos_id
        self.pad_id = -1
        self.stop_tokens = set(tok.eog_ids)

    def encode(self, s: str, bos: bool = True, eos: bool = False) -> list[int]:
        if not isinstance(s, str):
            raise TypeError(f"encode takes a str, not {type(s).__name__}")
        ids = self._tok.encode(s, add_bos=False, special=False)
        if bos and self.bos_id >= 0:
            ids = [self.bos_id] + ids
        if eos and self.eos_id >= 0:
            ids = ids + [self.eos_id]
        return ids

    def decode(self, t: Sequence[int]) -> str:
        return self._tok.decode(list(t))

    def __getattr__(self, name):  # the full torchless.Tokenizer for everything else
        return getattr(self._tok, name)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


class Llama:
    """A model and its tokenizer with the reference generation API (see the module doc)."""

    def __init__(self, model: Transformer, tokenizer: TokenizerAPI, seed: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self._seed = secrets.randbits(64) if seed is None else int(seed)
        self._metrics: dict[str, float] = {}

    @staticmethod
    def build(ckpt_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None, max_seq_len: int = 2048,
              max_batch_size: int = 4, seed: int = 1, n_threads: int | None = None, device: str = "auto",
              verbose: bool = True) -> "Llama":
        """Load a model (catalog name, .gguf/.tl path, llama2.c checkpoint) and its tokenizer
        (default: the one inside the model file; or a SentencePiece .model, a GGUF, a llama2.c
        tokenizer.bin; a llama2.c checkpoint has none of its own). A catalog model
        is fetched into the cache first, with a progress bar on a terminal (verbose=False: silent).
        Several Llama objects on one file share its mapped weights, each with its own context."""
        from . import hub
        from .tokenizer import Tokenizer

        if not os.path.exists(os.fspath(ckpt_dir)):
            ckpt_dir = hub.resolve(os.fspath(ckpt_dir), progress=None if verbose else False)
        for name, v in (("max_seq_len", max_seq_len), ("max_batch_size", max_batch_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        t0 = time.perf_counter()
        model = Transformer.from_pretrained(ckpt_dir, max_seq_len=max_seq_len, max_batch_size=max_batch_size,
                                            n_threads=n_threads, tokenizer_path=tokenizer_path, device=device)
        tok = Tokenizer(tokenizer_path if tokenizer_path is not None else model.model.path)
        llm = Llama(model, TokenizerAPI(tok), seed=seed)
        llm._metrics["load_s"] = time.perf_counter() - t0
        return llm

    # ---- the reference loop

    def generate(self, prompt_tokens: Sequence[Sequence[int]], max_gen_len: int, temperature: float = 0.6,
                 top_p: float = 0.9, logprobs: bool = False, echo: bool = False):
        """Reference semantics: (generation_tokens, generation_logprobs or None)."""
        params = self.model.params
        bsz = len(prompt_tokens)
        if bsz == 0:
            raise ValueError("prompt_tokens is empty")
        if bsz > params.max_batch_size:
            raise ValueError(f"{bsz} prompts exceed max_batch_size {params.max_batch_size}")
        if not isinstance(max_gen_len, int) or max_gen_len < 0:
            raise ValueError(f"max_gen_len must be a non-negative int, got {max_gen_len!r}")
        if not (temperature >= 0 and np.isfinite(temperature)):
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if not (0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        prompts = [[int(t) for t in p] for p in prompt_tokens]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        min_prompt_len, max_prompt_len = min(map(len, prompts)), max(map(len, prompts))
        if max_prompt_len > params.max_seq_len:
            raise ValueError(f"a prompt of {max_prompt_len} tokens exceeds max_seq_len {params.max_seq_len}")
        total_len = min(params.max_seq_len, max_gen_len + max_prompt_len)
        pad = -1
        tokens = np.full((bsz, total_len), pad, np.int64)
        for k, p in enumerate(prompts):
            tokens[k, :len(p)] = p
        token_logprobs = np.zeros((bsz, total_len), np.float64) if logprobs else None
        prev_pos = 0
        eos_reached = np.zeros(bsz, bool)
        input_text_mask = tokens != pad
        stop = np.array(sorted(self.tokenizer.stop_tokens), np.int64)
        samplers = [_C.Sampler(params.vocab_size, temperature=1.0, top_k=0, top_p=top_p, min_p=0.0,
                               seed=(self._seed + k) % 2**64) for k in range(bsz)] if temperature > 0 else None
        t0 = time.perf_counter()
        first = None
        if min_prompt_len == total_len and logprobs:
            logits = self.model.forward(tokens, prev_pos)
            lp = _log_softmax(logits)
            token_logprobs[:, 1:] = np.take_along_axis(lp[:, :-1], tokens[:, 1:, None], 2)[..., 0]
        for cur_pos in range(min_prompt_len, total_len):
            # rows still inside their prompt feed the prompt's token; pad slots (never read) use 0
            chunk = np.where(tokens[:, prev_pos:cur_pos] < 0, 0, tokens[:, prev_pos:cur_pos])
            logits = self.model.forward(chunk, prev_pos)
            last = logits[:, -1]
            if temperature > 0:  # the reference: softmax(logits / T), then the top-p nucleus
                next_token = np.array([samplers[k].sample((last[k] / temperature).astype(np.float32))[0]
                                       for k in range(bsz)], np.int64)
            else:
                next_token = np.argmax(last, axis=-1)
            next_token = np.where(input_text_mask[:, cur_pos], tokens[:, cur_pos], next_token)
            tokens[:, cur_pos] = next_token
            if logprobs:
                lp = _log_softmax(logits)
                tgt = tokens[:, prev_pos + 1:cur_pos + 1]
                vals = np.take_along_axis(lp, np.where(tgt < 0, 0, tgt)[..., None], 2)[..., 0]
                token_logprobs[:, prev_pos + 1:cur_pos + 1] = np.where(tgt < 0, 0.0, vals)
            eos_reached |= (~input_text_mask[:, cur_pos]) & np.isin(next_token, stop)
            prev_pos = cur_pos
            if first is None:
                first = time.perf_counter()
            if eos_reached.all():
                break
        end = time.perf_counter()
        out_tokens, out_logprobs = [], []
        for k, p in enumerate(prompts):
            start = 0 if echo else len(p)
            toks = tokens[k, start:len(p) + max_gen_len].tolist()
            probs = token_logprobs[k, start:len(p) + max_gen_len].tolist() if logprobs else None
            for i, t in enumerate(toks):
                if i + start >= len(p) and t in self.tokenizer.stop_tokens:
                    toks, probs = toks[:i], (probs[:i] if probs is not None else None)
                    break
            out_tokens.append(toks)
            out_logprobs.append(probs)
        n_new = sum(len(t) - (0 if not echo else len(p)) for t, p in zip(out_tokens, prompts))
        self._metrics.update(peak_rss_mb=_peak_rss_mb(), time_to_first_token_s=(first or end) - t0,
                             generation_s=end - t0,
                             prompt_tokens=sum(map(len, prompts)), generated_tokens=n_new,
                             tokens_per_s=n_new / (end - (first or t0)) if end > (first or t0) else 0.0,
                             prompt_tokens_per_s=sum(map(len, prompts)) / ((first or end) - t0)
                             if (first or end) > t0 else 0.0)
        return out_tokens, (out_logprobs if logprobs else None)

    def text_completion(self, prompts: Sequence[str], temperature: float = 0.6, top_p: float = 0.9,
                        max_gen_len: int | None = None, logprobs: bool = False, echo: bool = False
                        ) -> list[CompletionPrediction]:
        """Complete each prompt (encoded with BOS): [{"generation": text, "tokens"?, "logprobs"?}].
        max_gen_len defaults to max_seq_len - 1; temperature >= 0, top_p in (0, 1]."""
        if max_gen_len is None:
            max_gen_len = self.model.params.max_seq_len - 1
        prompt_tokens = [self.tokenizer.encode(x, bos=True, eos=False) for x in prompts]
        toks, lps = self.generate(prompt_tokens, max_gen_len, temperature, top_p, logprobs, echo)
        if logprobs:
            return [{"generation": self.tokenizer.decode(t), "tokens": [self.tokenizer.decode([x]) for x in t],
                     "logprobs": lp} for t, lp in zip(toks, lps)]
        return [{"generation": self.tokenizer.decode(t)} for t in toks]

    def chat_completion(self, dialogs: Sequence[Sequence[Mapping[str, str]]], temperature: float = 0.6,
                        top_p: float = 0.9, max_gen_len: int | None = None, logprobs: bool = False
                        ) -> list[ChatPrediction]:
        """Each dialog rendered with the model's chat template (CONVENTIONS.md), then generated."""
        if max_gen_len is None:
            max_gen_len = self.model.params.max_seq_len - 1
        engine = self.model.model
        prompt_tokens = [engine.encode_prompt(engine.apply_chat_template(d)) for d in dialogs]
        toks, lps = self.generate(prompt_tokens, max_gen_len, temperature, top_p, logprobs)
        out = []
        for k, t in enumerate(toks):
            pred: ChatPrediction = {"generation": {"role": "assistant", "content": self.tokenizer.decode(t)}}
            if logprobs:
                pred["tokens"] = [self.tokenizer.decode([x]) for x in t]
                pred["logprobs"] = lps[k]
            out.append(pred)
        return out

    # ---- additions

    def stream(self, prompt: str | Sequence[int], config: GenerationConfig | None = None) -> Iterator[str]:
        """Text as it is generated (the C loop, one GIL round trip per token)."""
        config = config or GenerationConfig.balanced()
        kw = config.to_kwargs()
        if kw.get("seed") is None:
            kw["seed"] = self._seed
        yield from self.model.model.stream(prompt, **kw)

    def model_info(self) -> dict[str, Any]:
        """Architecture, parameter count, context length, file size, quantization, bits per weight, path."""
        from .cli import describe
        from .files import load

        with load(self.model.model.path) as f:
            d = describe(f)
        return {"architecture": d.get("architecture"), "parameters": d.get("n_params"),
                "context_length": d.get("context_length"), "file_size": d.get("file_size"),
                "quantization": d.get("file_type"), "bits_per_weight": d.get("bits_per_weight"), "path": d.get("path")}

    def last_metrics(self) -> dict[str, float]:
        """Figures of the last calls: load_s, time_to_first_token_s, prompt_tokens_per_s,
        tokens_per_s, prompt_tokens, generated_tokens, generation_s, peak_rss_mb."""
        return dict(self._metrics)
