"""`GenerationConfig`: sampling options as one immutable, checked value.

    from torchless import GenerationConfig, Model
    cfg = GenerationConfig.creative().with_max_new_tokens(64).with_stop("\\n\\n").with_seed(7)
    Model("model.gguf").generate("Once upon a time", **cfg.to_kwargs())

Every field has a `with_<field>(value)` builder returning a new, validated config; `with_stop`
adds stop sequences. The reference-style name is `repetition_penalty`; `to_kwargs()` maps it to
the engine's `repeat_penalty` (CONVENTIONS.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["GenerationConfig"]

# field -> one-line meaning (the class docstring and the builders' docstrings use these)
_FIELD_DOCS = {
    "max_new_tokens": "tokens to generate at most (>= 0)",
    "temperature": "softmax temperature (>= 0; 0 = greedy: argmax, top_k, top_p and min_p are then ignored)",
    "top_k": "keep the k most likely tokens (>= 0; 0 = off)",
    "top_p": "nucleus: keep the smallest set with this probability mass (in (0, 1]; 1 = off)",
    "min_p": "drop tokens below min_p times the top probability (in [0, 1); 0 = off)",
    "repetition_penalty": "divide positive / multiply negative logits of recent tokens (> 0; 1 = off)",
    "presence_penalty": "subtract from the logits of tokens seen recently (finite; 0 = off)",
    "frequency_penalty": "subtract, per occurrence, from the logits of recent tokens (finite; 0 = off)",
    "penalty_last_n": "how many recent tokens the penalties look at (>= -1; -1 = the whole context, 0 = off)",
    "stop_sequences": "strings that end the generation (not included in the text)",
    "seed": "sampler seed (None = random, or 0 <= seed < 2**64)",
    "logprobs": "report the log-probability of each generated token (of the raw logits)",
    "top_logprobs": "also report this many most likely alternatives per position (>= 0)",
    "skip_special_tokens": "leave control tokens out of the text",
}


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling options (defaults are llama.cpp's, as `balanced()`).

    Fields: max_new_tokens=256, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
    repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64,
    stop_sequences=(), seed=None, logprobs=False, top_logprobs=0, skip_special_tokens=True.

    `stop_sequences` is stored as a tuple (a single str becomes a 1-tuple). Construction
    validates (`validate()`, ValueError naming the field); the object is frozen, change it with
    the `with_<field>(value)` builders or `dataclasses.replace`.
    """

    max_new_tokens: int = 256
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    skip_special_tokens: bool = True

    def __post_init__(self):
        stops = self.stop_sequences
        if isinstance(stops, str):
            stops = (stops,)
        elif isinstance(stops, Iterable):
            stops = tuple(stops)
        object.__setattr__(self, "stop_sequences", stops)
        self.validate()

    # ---- presets --------------------------------------------------------------------------

    @classmethod
    def greedy(cls, **overrides) -> "GenerationConfig":
        """Argmax decoding: temperature 0, with every filter switched off (top_k 0, top_p 1,
        min_p 0) so the config says what happens; penalties stay neutral. Deterministic, so
        no seed is needed."""
        return cls(**{"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, **overrides})

    @classmethod
    def balanced(cls, **overrides) -> "GenerationConfig":
        """llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, no penalty."""
        return cls(**overrides)

    @classmethod
    def creative(cls, **overrides) -> "GenerationConfig":
        """More varied text: temperature 1.0, top_k off (0), top_p 0.98, min_p 0.02 (min_p does
        the tail cutting, scaled to the model's confidence), repetition_penalty 1.05 (a light
        one, over the last 64 tokens)."""
        return cls(**{"temperature": 1.0, "top_k": 0, "top_p": 0.98, "min_p": 0.02,
                      "repetition_penalty": 1.05, **overrides})

    # ---- builders -------------------------------------------------------------------------

    def with_stop(self, *sequences: str | Iterable[str]) -> "GenerationConfig":
        """A copy with these stop sequences added (each argument a str or an iterable of str;
        ones already present are not repeated)."""
        added: list[str] = []
        for s in sequences:
            if isinstance(s, str) or not isinstance(s, Iterable):
                added.append(s)
            else:
                added.extend(s)
        stops = list(self.stop_sequences)
        for s in added:
            if s not in stops:
                stops.append(s)
        return dataclasses.replace(self, stop_sequences=tuple(stops))

    # ---- checks and conversion ------------------------------------------------------------

    def validate(self) -> "GenerationConfig":
        """Raise ValueError naming the first bad field and its allowed range; return self."""

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def need_int(name, lo):
            v = getattr(self, name)
            if not is_int(v) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")

        need_int("max_new_tokens", 0)
        if not is_real(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        need_int("top_k", 0)
        if not is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not is_real(self.min_p) or not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p!r}")
        if not is_real(self.repetition_penalty) or not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not is_real(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        need_int("penalty_last_n", -1)
        if not isinstance(self.stop_sequences, tuple):
            raise ValueError(f"stop_sequences must be a str or an iterable of str, got {self.stop_sequences!r}")
        for s in self.stop_sequences:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop_sequences must hold non-empty strings, got {s!r}")
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed < 2**64):
            raise ValueError(f"seed must be None or an integer with 0 <= seed < 2**64, got {self.seed!r}")
        for name in ("logprobs", "skip_special_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        need_int("top_logprobs", 0)
        return self

    def to_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `torchless.Model.steps` / `stream` / `generate`:
        repetition_penalty becomes repeat_penalty, stop_sequences stop (None when empty),
        skip_special_tokens special (its negation). logprobs / top_logprobs are not among them
        (`steps` always yields each token's logprob)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "repeat_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "penalty_last_n": self.penalty_last_n,
            "seed": self.seed,
            "stop": list(self.stop_sequences) or None,
            "special": not self.skip_special_tokens,
        }


def _make_builder(field: dataclasses.Field):
    name = field.name

    def builder(self, value):
        return dataclasses.replace(self, **{name: value})

    builder.__name__ = f"with_{name}"
    builder.__qualname__ = f"GenerationConfig.with_{name}"
    builder.__doc__ = f"A copy with `{name}` set to `value` ({_FIELD_DOCS[name]}); validated."
    builder.__signature__ = inspect.Signature([
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("value", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=field.type),
    ], return_annotation="GenerationConfig")
    builder.__module__ = __name__
    return builder


for _f in dataclasses.fields(GenerationConfig):
    setattr(GenerationConfig, f"with_{_f.name}", _make_builder(_f))
del _f

GenerationConfig.__doc__ += "\n    " + "\n    ".join(f"{k}: {v}" for k, v in _FIELD_DOCS.items()) + "\n"
