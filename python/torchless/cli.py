"""The ``torchless`` command line (console script ``torchless``, and ``python -m torchless``).

Subcommands register themselves in ``COMMANDS`` with the ``command`` decorator: a function
that adds its arguments to an argparse subparser and returns the handler to call with the
parsed namespace. A handler returns the exit code. Errors a user can cause (missing or bad
file, unknown catalog name, a fetch that failed) print one line ``torchless: error: ...``
on stderr and exit with 1; argparse usage errors exit with 2.

    torchless models                 the catalog of packaged models
    torchless info MODEL [--json]    what a model file holds (path or catalog name)
    torchless convert SRC OUT [--type TYPE] [--format gguf|tl]
    torchless quantize IN.gguf OUT.gguf TYPE

A bare prompt (``torchless "The capital of France is"``) is routed to the ``run`` command
once it exists (see ``_route_bare_prompt``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import hub

PROG = "torchless"
Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- command registry


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], Handler]


COMMANDS: Dict[str, Command] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], Handler]], Any]:
    """Register a subcommand: ``setup(parser)`` adds arguments and returns the handler."""

    def register(setup: Callable[[argparse.ArgumentParser], Handler]) -> Any:
        COMMANDS[name] = Command(name, help, setup)
        return setup

    return register


class CLIError(Exception):
    """A user-facing error: printed as ``torchless: error: <message>``, exit code 1."""


# Errors a handler may let through; they become one line on stderr and exit code 1.
# (OSError covers FileNotFoundError, PermissionError, I/O errors from the engine and
# hub.DownloadError; hub.IntegrityError is a RuntimeError.)
USER_ERRORS = (CLIError, ValueError, OSError, hub.HubError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="torchless: run large language models from Python and the shell.",
    )

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.set_defaults(_handler=cmd.setup(p))
    return parser


def _route_bare_prompt(argv: List[str]) -> List[str]:
    """``torchless "prompt" [opts]`` → ``torchless run "prompt" [opts]`` once `run` exists."""
    if "run" in COMMANDS and argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        return ["run", *argv]
    return argv


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_route_bare_prompt(args_list))
    try:
        return int(args._handler(args) or 0)
    except USER_ERRORS as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.strerror}: {e.filename}"
    return " ".join(text.split())


# --------------------------------------------------------------------------- formatting helpers


def format_count(n: Optional[int]) -> str:
    """134_515_008 → '134.5 M'; small counts print whole."""
    if n is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _plain(value: Any) -> Any:
    """Metadata values as JSON-friendly Python values (NumPy arrays/scalars → lists/numbers)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# llama.cpp's `general.file_type` (enum llama_ftype), without the MOSTLY_ prefix.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}


# --------------------------------------------------------------------------- `info`


def _n_elements(t: Any) -> int:
    size = getattr(t, "size", None)
    if isinstance(size, int):
        return size
    return math.prod(int(d) for d in t.shape)


def _tensor_summary(tensors: Any) -> Dict[str, Any]:
    """Element count, byte count and a per-dtype histogram of a name → TensorView mapping."""
    n_params = n_bytes = 0
    dtypes: Dict[str, Dict[str, int]] = {}
    for t in tensors.values():
        n, b = _n_elements(t), int(t.nbytes)
        n_params += n
        n_bytes += b
        h = dtypes.setdefault(str(t.dtype), {"tensors": 0, "elements": 0, "bytes": 0})
        h["tensors"] += 1
        h["elements"] += n
        h["bytes"] += b
    ordered = dict(sorted(dtypes.items(), key=lambda kv: (-kv[1]["bytes"], kv[0])))
    return {"n_params": n_params, "tensor_bytes": n_bytes, "n_tensors": len(tensors),
            "dtypes": ordered}


def describe(model: Any) -> Dict[str, Any]:
    """The facts `torchless info` prints, as a JSON-friendly dict."""
    md = model.metadata
    arch = model.architecture or md.get("general.architecture")

    def arch_key(key: str) -> Any:
        return _plain(md.get(f"{arch}.{key}")) if arch else None

    tokens = md.get("tokenizer.ggml.tokens")
    vocab_size = len(tokens) if tokens is not None else arch_key("vocab_size")
    summary = _tensor_summary(model.tensors)
    file_type = _plain(md.get("general.file_type"))
    from .convert import describe_fallbacks

    return {
        "path": str(model.path),
        "format": model.format,
        "version": _plain(model.version),
        "architecture": arch,
        "name": _plain(md.get("general.name")),
        "file_type": FILE_TYPES.get(file_type, file_type) if file_type is not None else None,
        "n_params": summary["n_params"],
        "context_length": arch_key("context_length"),
        "embedding_length": arch_key("embedding_length"),
        "feed_forward_length": arch_key("feed_forward_length"),
        "n_layers": arch_key("block_count"),
        "n_heads": arch_key("attention.head_count"),
        "n_kv_heads": arch_key("attention.head_count_kv"),
        "vocab_size": vocab_size,
        "tokenizer_model": _plain(md.get("tokenizer.ggml.model")),
        "tokenizer_pre": _plain(md.get("tokenizer.ggml.pre")),
        "file_size": int(model.file_size),
        "n_tensors": summary["n_tensors"],
        "tensor_bytes": summary["tensor_bytes"],
        "bits_per_weight": (8 * summary["tensor_bytes"] / summary["n_params"]
                            if summary["n_params"] else None),
        "dtypes": summary["dtypes"],
        "fallbacks": describe_fallbacks(model),
        "cpu_kernels": _cpu_kernels(),
    }


def _cpu_kernels() -> str:
    """The kernels this CPU runs (chosen from CPUID/HWCAP at load; TORCHLESS_CPU=scalar|avx2|avx512|neon overrides)."""
    from . import _C

    return _C.cpu_isa()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _or_dash(v: Any) -> str:
    return "-" if v is None else str(v)


def format_info(d: Dict[str, Any]) -> str:
    fmt = d["format"].upper() if d["format"] else "-"
    if d["version"]:
        fmt += f" v{d['version']}"
    heads = _or_dash(d["n_heads"])
    if d["n_kv_heads"] is not None:
        heads += f" (kv {d['n_kv_heads']})"
    tok = _or_dash(d["tokenizer_model"])
    if d["tokenizer_pre"]:
        tok += f" (pre: {d['tokenizer_pre']})"
    params = format_count(d["n_params"])
    if d["n_params"]:
        params += f" ({d['n_params']:,})"
    bpw = "-" if d["bits_per_weight"] is None else f"{d['bits_per_weight']:.2f}"
    rows = [
        ("path", d["path"]),
        ("format", fmt),
        ("architecture", _or_dash(d["architecture"])),
        ("name", _or_dash(d["name"])),
        ("file type", _or_dash(d["file_type"])),
        ("parameters", params),
        ("context length", _or_dash(d["context_length"])),
        ("embedding length", _or_dash(d["embedding_length"])),
        ("feed-forward length", _or_dash(d["feed_forward_length"])),
        ("layers", _or_dash(d["n_layers"])),
        ("heads", heads),
        ("vocab size", _or_dash(d["vocab_size"])),
        ("tokenizer", tok),
        ("file size", _mib(d["file_size"])),
        ("bits per weight", bpw),
        ("tensors", str(d["n_tensors"])),
    ]
    if d.get("cpu_kernels"):
        rows.append(("cpu kernels", d["cpu_kernels"]))
    if d.get("fallbacks"):
        from .convert import format_fallbacks

        rows.append(("fallbacks", format_fallbacks(d["fallbacks"])))
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k + ':':{width}}{v}" for k, v in rows]
    for dtype, h in d["dtypes"].items():
        lines.append(f"  {dtype:8s} {h['tensors']:5d} tensors {_mib(h['bytes']):>12s}  "
                     f"{format_count(h['elements'])} elements")
    return "\n".join(lines)


def _open_model(name_or_path: str) -> Any:
    import torchless  # the C extension is needed only here

    path = hub.resolve(name_or_path)
    return torchless.load(path)


def format_backends(devs: List[Dict[str, Any]]) -> str:
    """One line a device: `cuda:0  NVIDIA H100 80GB HBM3  79.2 GiB free of 79.6 GiB`."""
    lines = []
    for d in devs:
        where = f"{d['backend']}:{d['index']}"
        mem = ""
        if d.get("total_bytes"):
            mem = f"  {d['free_bytes'] / 2**30:.1f} GiB free of {d['total_bytes'] / 2**30:.1f} GiB"
        note = "" if d.get("auto", True) else "  (not taken by device=\"auto\")"
        lines.append(f"{where:<10} {d['name']}{mem}{note}")
    return "\n".join(lines)


@command("info", help="describe a model file (a path or a catalog name), or the devices (--backends)")
def _setup_info(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("model", metavar="MODEL", nargs="?", help="a .gguf/.safetensors path or a catalog name")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.add_argument("--backends", action="store_true",
                   help="list the devices this build can run on (GPUs first, as device=\"auto\" tries them)")

    def run(args: argparse.Namespace) -> int:
        if args.backends:
            import torchless

            devs = torchless.backends()
            print(json.dumps(devs, indent=2) if args.json else format_backends(devs))
            if args.model is None:
                return 0
        if args.model is None:
            raise CLIError("expected a MODEL (or --backends)")
        model = _open_model(args.model)
        try:
            d = describe(model)
        finally:
            model.close()
        print(json.dumps(d, indent=2) if args.json else format_info(d))
        return 0

    return run


# --------------------------------------------------------------------------- `convert`, `quantize`


def _run_convert(src: str, dst: str, type_name: str, fmt: Optional[str], threads: Optional[int],
                 quiet: bool) -> int:
    import warnings

    from .convert import _convert

    def show(message, *args, **kwargs) -> None:  # at once, on one line, before the long work
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        report = _convert(src, dst, type_name, format=fmt, progress=not quiet, n_threads=threads)
    print(report.summary())
    return 0


def _type_help() -> str:
    from .convert import TYPES

    return ", ".join(TYPES)


@command("convert", help="write a model (GGUF, or any file torchless reads) as GGUF with a quantization mix")
def _setup_convert(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("src", metavar="SRC", help="a model path or catalog name")
    p.add_argument("out", metavar="OUT", help="the output file (.gguf; .tl for the native format)")
    p.add_argument("--type", "--outtype", dest="type", default="q8_0",
                   help=f"quantization mix (llama.cpp names): {_type_help()} (default q8_0)")
    p.add_argument("--format", choices=["gguf", "tl"], default=None,
                   help="output format (default: tl when OUT ends in .tl, else gguf)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: the available cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; only the summary")

    def run(args: argparse.Namespace) -> int:
        return _run_convert(args.src, args.out, args.type, args.format, args.threads, args.quiet)

    return run


@command("quantize", help="quantize a GGUF model like llama-quantize (IN OUT TYPE)")
def _setup_quantize(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("src", metavar="IN", help="the model to quantize (a .gguf path or catalog name)")
    p.add_argument("out", metavar="OUT", help="the output .gguf file")
    p.add_argument("type", metavar="TYPE", help=f"quantization mix: {_type_help()}")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: the available cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; only the summary")

    def run(args: argparse.Namespace) -> int:
        return _run_convert(args.src, args.out, args.type, "gguf", args.threads, args.quiet)

    return run


# --------------------------------------------------------------------------- `models`


@command("models", help="list the catalog of packaged models (see torchless.hub)")
def _setup_models(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--json", action="store_true", help="print the catalog as JSON")

    def run(args: argparse.Namespace) -> int:
        infos = [hub.info(name) for name in hub.list_models()]
        if args.json:
            print(json.dumps(infos, indent=2))
            return 0
        for d in infos:
            state = "cached" if d["cached"] else "not fetched"
            aliases = f" (aka {', '.join(d['aliases'])})" if d["aliases"] else ""
            print(f"{d['name']}{aliases}\n  {d['description']}\n"
                  f"  {d['architecture']}, {d['quant']}, {_mib(d['size'])}, {state}; "
                  f"license: {d['license']}")
        return 0

    return run


# --------------------------------------------------------------------------- run

DEFAULT_MODEL = "smollm2-135m-instruct"


def _looks_like_model(arg: str) -> bool:
    import os

    return os.path.exists(arg) or hub._lookup(arg) is not None


@command("run", help="generate text from a prompt (torchless [run] [MODEL] PROMPT [options])")
def _setup_run(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("args", nargs="+", metavar="[MODEL] PROMPT",
                   help=f"a model path or catalog name (default {DEFAULT_MODEL}), then the prompt")
    p.add_argument("-n", "--max-new-tokens", type=int, default=256, help="tokens to generate at most (default 256)")
    p.add_argument("--temp", "--temperature", dest="temperature", type=float, default=0.8,
                   help="sampling temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens; 0 = off (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass in (0, 1] (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="drop tokens below min-p x the best (default 0.05)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="llama.cpp's repeat penalty; 1 = off")
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--repeat-last-n", type=int, default=64, help="window of the penalties (default 64)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("--device", default="auto",
                   help="auto (default: the first GPU found, else the CPU), cpu, cuda[:N], hip[:N] or opencl[:N]")
    p.add_argument("-c", "--ctx-size", type=int, default=0, help="context positions (default: the model's, up to 4096)")
    p.add_argument("--kv-dtype", "--cache-type", dest="kv_dtype", default="f16", choices=["f16", "f32", "q8_0"],
                   help="the KV cache's type (default f16; q8_0: the CPU's, about half the memory)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); backslash escapes allowed")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer file instead of the model's own (.model, tokenizer.bin, .gguf); "
                        "needed for a llama2.c checkpoint")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--chat", dest="chat", action="store_true", default=None,
                      help="render the prompt with the model's chat template (default when it has one)")
    mode.add_argument("--raw", dest="chat", action="store_false", help="use the prompt as it is")

    def run(args: argparse.Namespace) -> int:
        import time

        from .model import Model

        if len(args.args) > 2:
            raise CLIError("expected [MODEL] PROMPT; quote the prompt")
        if len(args.args) == 2:
            model_name, prompt = args.args
        elif _looks_like_model(args.args[0]):
            raise CLIError("no prompt given")
        else:
            model_name, prompt = DEFAULT_MODEL, args.args[0]
        if not prompt:
            raise CLIError("the prompt is empty")
        stops = [s.encode("utf-8").decode("unicode_escape") for s in args.stop]
        t0 = time.perf_counter()
        model = Model(model_name, max_seq_len=args.ctx_size, n_threads=args.threads, kv_dtype=args.kv_dtype,
                      tokenizer_path=args.tokenizer, device=args.device)
        t_load = time.perf_counter() - t0
        chat_mode = args.chat if args.chat is not None else model.chat_template is not None
        text = model.apply_chat_template([{"role": "user", "content": prompt}]) if chat_mode else prompt
        ids = model.encode_prompt(text)
        budget = model.max_seq_len - len(ids)
        if budget <= 0:
            raise CLIError(f"the prompt has {len(ids)} tokens; the context holds {model.max_seq_len} (-c to enlarge)")
        n_new = min(args.max_new_tokens, budget)
        steps = model.steps(ids, max_new_tokens=n_new, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                            presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                            penalty_last_n=args.repeat_last_n, seed=args.seed, stop=stops)
        generated, t_first, t_start = 0, None, time.perf_counter()
        interrupted = False
        try:
            for _, _, piece, _ in steps:
                if t_first is None:
                    t_first = time.perf_counter()
                generated += 1
                if piece:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        except KeyboardInterrupt:
            interrupted = True
        t_end = time.perf_counter()
        sys.stdout.write("\n")
        prompt_s = (t_first or t_end) - t_start
        gen_s = t_end - (t_first or t_end)
        summary = (f"load {t_load * 1e3:.0f} ms | prompt {len(ids)} tokens, {len(ids) / prompt_s:.1f} tokens/s"
                   if prompt_s > 0 else f"load {t_load * 1e3:.0f} ms | prompt {len(ids)} tokens")
        if generated > 1 and gen_s > 0:
            summary += f" | generation {generated} tokens, {(generated - 1) / gen_s:.1f} tokens/s"
        else:
            summary += f" | generation {generated} tokens"
        if interrupted:
            summary += " | interrupted"
        print(summary, file=sys.stderr)
        return 130 if interrupted else 0

    return run


if __name__ == "__main__":  # pragma: no cover  (after every @command, so all are registered)
    sys.exit(main())
