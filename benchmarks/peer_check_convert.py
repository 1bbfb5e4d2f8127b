"""Cross-check `torchless.convert` with llama-cpp-python: convert a model, load the output in
llama.cpp (through llama-cpp-python, in its own virtual environment) and compare its greedy
tokens with torchless's greedy generation on the same file. Prints one JSON object per check.

    python benchmarks/peer_check_convert.py [--peer-python ~/.cache/torchless/peer-venv/bin/python]
                                            [--n 32] [--checks smollm2:q8_0,smollm2:q4_k_m,gemma3:q8_0]

Both engines get the same prompt token ids (torchless's tokenizer, BOS per the vocabulary), so
only the weights and the forward passes are compared; generation is argmax (temperature 0),
`--n` new tokens, stopping at an end-of-generation token. The source file itself is checked
too (`"file": "source"`), so a divergence that the original already shows is not charged to
the conversion. Near-ties can flip an argmax between two correct engines; `same_prefix` is the
number of leading generated tokens that agree.

Each conversion is also compared with llama.cpp's own quantizer on the same source
(`llama_cpp.llama_model_quantize`, allow_requantize): the type llama.cpp chose for every tensor,
how many tensors are byte-identical, and the largest normwise difference between the two
dequantized tensors (`"bench": "vs_llama_quantize"`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import torchless

MODELS = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m"}
PROMPTS = ["The capital of France is", "Once upon a time, there was a little robot who",
           "def fibonacci(n):"]

PEER = r"""
import json, sys
from llama_cpp import Llama
path, n_new = sys.argv[1], int(sys.argv[2])
prompts = json.loads(sys.stdin.read())
llm = Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, logits_all=False)
out = []
for ids in prompts:
    llm.reset()
    got = []
    for tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if llm._model.token_is_eog(tok) if hasattr(llm._model, "token_is_eog") else tok == llm.token_eos():
            break
        got.append(int(tok))
        if len(got) >= n_new:
            break
    out.append(got)
print(json.dumps(out))
"""


QUANTIZE = r"""
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.allow_requantize, p.nthread = int(sys.argv[3]), True, 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


def vs_llama_quantize(python: str, model: str, mix: str, src: str, ours_path: str, tmp: str) -> None:
    """Our file against llama.cpp's quantization of the same source, tensor by tensor."""
    theirs = os.path.join(tmp, f"{model}-{mix}-llama.cpp.gguf")
    file_type = sys.modules["torchless.convert"].MIXES[mix].file_type
    record = {"bench": "vs_llama_quantize", "model": model, "type": mix}
    r = subprocess.run([python, "-c", QUANTIZE, src, theirs, str(file_type)], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode:
        record["peer_error"] = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        print(json.dumps(record), flush=True)
        return
    with torchless.load(ours_path) as a, torchless.load(theirs) as b:
        names = list(a.tensors)
        record["same_names"] = sorted(names) == sorted(b.tensors)
        type_diff = {n: [a.tensors[n].dtype, b.tensors[n].dtype] for n in names
                     if n in b.tensors and a.tensors[n].dtype != b.tensors[n].dtype}
        record["tensors"] = len(names)
        record["type_mismatches"] = len(type_diff)
        record["type_mismatch_examples"] = dict(list(type_diff.items())[:5])
        identical, worst, worst_name = 0, 0.0, None
        for n in names:
            if n not in b.tensors or n in type_diff:
                continue
            x, y = a.tensors[n], b.tensors[n]
            if np.array_equal(np.asarray(x), np.asarray(y)):
                identical += 1
                continue
            fx, fy = x.dequantize(), y.dequantize()
            err = float(np.linalg.norm(fx - fy) / max(np.linalg.norm(fy), 1e-30))
            if err > worst:
                worst, worst_name = err, n
        record["byte_identical"] = identical
        record["max_normwise_diff"] = worst
        record["max_diff_tensor"] = worst_name
        record["file_mib"] = [round(os.path.getsize(ours_path) / (1 << 20), 2), round(os.path.getsize(theirs) / (1 << 20), 2)]
    os.unlink(theirs)
    print(json.dumps(record), flush=True)


def ours(path: str, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    m = torchless.Model(path, max_seq_len=256, n_threads=2)
    out = []
    for ids in prompts:
        got = []
        for tok, _, _, _ in m.generate_iter(ids, max_new_tokens=n_new, temperature=0.0, top_k=1, top_p=1.0,
                                            min_p=0.0, seed=0):
            if tok in m.tokenizer.eog_ids:
                break
            got.append(int(tok))
        m.reset()
        out.append(got)
    return out


def peer(python: str, path: str, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    r = subprocess.run([python, "-c", PEER, path, str(n_new)], input=json.dumps(prompts), capture_output=True,
                       text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def check(model: str, file: str, path: str, python: str, n_new: int) -> None:
    tok = torchless.Tokenizer(path)
    prompts = [tok.encode(p, add_bos=tok.add_bos) for p in PROMPTS]
    record = {"bench": "peer_check_convert", "model": model, "file": file, "path": os.path.basename(path)}
    try:
        a = ours(path, prompts, n_new)
    except Exception as e:  # noqa: BLE001 - reported, not fatal (an architecture the engine lacks)
        a, record["torchless_error"] = None, f"{type(e).__name__}: {e}"
    try:
        b = peer(python, path, prompts, n_new)
    except Exception as e:  # noqa: BLE001
        b, record["peer_error"] = None, f"{type(e).__name__}: {e}"
    if a is not None and b is not None:
        record["same_prefix"] = [prefix(x, y) for x, y in zip(a, b)]
        record["generated"] = [[len(x), len(y)] for x, y in zip(a, b)]
        record["identical"] = a == b
        record["text_torchless"] = [tok.decode(x) for x in a]
        record["text_peer"] = [tok.decode(y) for y in b]
    elif b is not None:  # the peer ran the file although torchless could not
        record["generated_peer"] = [len(y) for y in b]
        record["text_peer"] = [tok.decode(y) for y in b]
    print(json.dumps(record, ensure_ascii=False), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=os.path.expanduser("~/.cache/torchless/peer-venv/bin/python"))
    p.add_argument("--n", type=int, default=32, help="new tokens per prompt (default 32)")
    p.add_argument("--checks", default="smollm2:q8_0,smollm2:q4_k_m,gemma3:q8_0")
    a = p.parse_args()
    checks = [c.split(":") for c in a.checks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        sources_done = set()
        for model, mix in checks:
            src = torchless.hub.resolve(MODELS.get(model, model))
            if src not in sources_done:
                sources_done.add(src)
                check(model, "source", src, a.peer_python, a.n)
            dst = os.path.join(tmp, f"{model}-{mix}.gguf")
            report = torchless.convert(src, dst, mix, progress=False)
            print(json.dumps({"bench": "convert", "model": model, "type": mix, "seconds": round(report.seconds, 2),
                              "out_mib": round(report.bytes_out / (1 << 20), 1), "bpw": round(report.bpw_out, 3),
                              "dtypes": report.dtypes, "fallbacks": report.fallbacks}), flush=True)
            check(model, mix, dst, a.peer_python, a.n)
            vs_llama_quantize(a.peer_python, model, mix, src, dst, tmp)
            os.unlink(dst)


if __name__ == "__main__":
    sys.exit(main())
