"""Chat templates, rendered the way Hugging Face transformers renders them (CONVENTIONS.md):
a sandboxed jinja2 environment with trim_blocks/lstrip_blocks, the loopcontrols extension,
`raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII text."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence


class TemplateError(ValueError):
    """The chat template raised an exception or could not be rendered."""


def _raise_exception(message: str):
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, separators=None, sort_keys: bool = False, ensure_ascii: bool = False):
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)


@lru_cache(maxsize=8)
def _compile(template: str):
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:  # pragma: no cover - jinja2 is a dependency
        raise TemplateError("chat templates need jinja2 (pip install jinja2)") from e
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render(template: str, messages: Sequence[Mapping[str, Any]], *, bos_token: str = "", eos_token: str = "",
           add_generation_prompt: bool = True, **extra: Any) -> str:
    """The prompt text for `messages` ([{"role": ..., "content": ...}, ...])."""
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must be a mapping with 'role' and 'content'")
    try:
        return _compile(template).render(messages=list(messages), bos_token=bos_token, eos_token=eos_token,
                                         add_generation_prompt=add_generation_prompt, **extra)
    except TemplateError:
        raise
    except Exception as e:  # jinja2 errors: syntax, undefined, sandbox
        raise TemplateError(f"chat template failed: {e}") from e
