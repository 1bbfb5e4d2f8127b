"""CPU speed against llama.cpp, as issue 6 states its targets: synthetic TinyLlama-1.1B- and
SmolLM2-135M-shaped models (bench.write_model: random weights, every tensor in the type
llama.cpp's quantize gives it for the format) and the packaged SmolLM2 and Gemma 3 files, ours
and llama-cpp-python's runs alternating (a fresh process each, A B A B), medians of the pairs,
ratios, and the read bandwidth probed in the same run for the ceiling. JSON lines, then a table
with each ratio's target.

    python benchmarks/compare.py [--models tinyllama-q4_0,...] [--threads 1,2] [--prompts 128,512]
                                 [--gen 64] [--pairs 5] [--peer PYTHON]
    python benchmarks/compare.py --table run1.jsonl run2.jsonl ...   (the table of earlier runs)

A run: load, a prompt of the first length, --gen tokens generated after it (greedy), then each
further prompt length on an emptied cache. The peer is llama-cpp-python 0.3.36 built from the
registry's source with native flags in a venv of its own (`make peer`, run here when the venv
is missing; several minutes on 2 cores). Not in CI: timings never go in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

MODELS = ["tinyllama-q4_0", "tinyllama-q8_0", "tinyllama-q4_k_m", "tinyllama-f16", "smollm2-q4_0", "smollm2-q8_0",
          "smollm2", "gemma3"]
PEER = os.path.join(os.path.dirname(bench.CACHE), "peer-venv", "bin", "python")


def targets(model: str, threads: int) -> tuple[float | None, float | None]:
    """(generation, prompt) ratios issue 6 asks for: on 2 threads, generation 1.0x where decode
    is bandwidth-bound (TinyLlama shape Q4_0, Q8_0, F16) and 1.3x for Q4_K_M and every small
    model; prompts 1.5x for Q4_0, Q8_0 and Q4_K_M, 1.0x for F16; on 1 thread no worse anywhere."""
    if threads == 1:
        return 1.0, 1.0
    fmt = {"smollm2": "q4_1", "gemma3": "q4_k_m"}.get(model, model.partition("-")[2])
    gen = 1.0 if model in ("tinyllama-q4_0", "tinyllama-q8_0", "tinyllama-f16") else 1.3
    prompt = {"q4_0": 1.5, "q8_0": 1.5, "q4_k_m": 1.5, "f16": 1.0}.get(fmt)
    return gen, prompt


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(name: str, threads: int, prompts: list[int], gen: int, pairs: int, peer: str | None, bw: float) -> dict:
    path = bench.model_path(name)
    weight_bytes = bench.matrix_bytes(path)
    ours, theirs = [], []
    for _ in range(pairs):
        ours.append(bench.ours_in_subprocess(path, threads, prompts[0], gen, tuple(prompts[1:])))
        if peer:
            p = bench.peer(peer, path, threads, prompts[0], gen, tuple(prompts[1:]))
            if p:
                theirs.append(p)
        bench.emit(bench="run", model=name, threads=threads, ours=ours[-1], peer=theirs[-1] if theirs else None)
    rec = dict(bench="compare", model=name, file_mb=round(os.path.getsize(path) / 2**20, 1), threads=threads,
               prompts=prompts, gen_tokens=gen, pairs=pairs, read_gb_s=round(bw / 1e9, 2),
               weight_mb_per_token=round(weight_bytes / 2**20, 1), ceiling_gen_tps=round(bw / weight_bytes, 1),
               ours=median_of(ours))
    if theirs:
        rec["peer"] = median_of(theirs)
        # the median of each pair's ratio: pairs ran back to back, so that load on the machine
        # (other processes) moves both
        for key in ["gen_tps", "prompt_tps"] + [f"prompt{n}_tps" for n in prompts[1:]]:
            rec[key.replace("_tps", "_ratio")] = round(statistics.median(a[key] / b[key] for a, b in zip(ours, theirs)), 2)
    return rec


def table(recs: list[dict]) -> str:
    prompts = recs[0]["prompts"]
    head = ["model", "file MB", "threads"]
    for n in prompts:
        head += [f"prompt {n} ours", "peer", "ratio (target)"]
    head += ["gen ours", "peer", "ratio (target)", "ceiling", "gen / ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in recs:
        tg, tp = targets(r["model"], r["threads"])
        peer = r.get("peer", {})

        def cell(key: str, target: float | None) -> list[str]:
            ratio = r.get(key.replace("_tps", "_ratio"))
            mark = "" if ratio is None or target is None else (" ok" if ratio >= target else " **below**")
            t = f" ({target})" if target else ""
            return [str(r["ours"][key]), str(peer.get(key, "")), f"{ratio}{t}{mark}" if ratio is not None else ""]

        row = [r["model"], str(r["file_mb"]), str(r["threads"])]
        for i, n in enumerate(prompts):
            row += cell("prompt_tps" if i == 0 else f"prompt{n}_tps", tp)
        row += cell("gen_tps", tg)
        row += [str(r["ceiling_gen_tps"]), str(round(r["ours"]["gen_tps"] / r["ceiling_gen_tps"], 2))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompts", default="128,512")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--peer", default=PEER, help="a Python with llama-cpp-python ('' for ours alone)")
    ap.add_argument("--table", nargs="*", metavar="JSONL", help="print the table of earlier runs' output and stop")
    a = ap.parse_args()
    if a.table is not None:
        recs = [json.loads(l) for f in a.table for l in open(f) if '"bench": "compare"' in l]
        print(table(recs))
        return
    if a.peer == PEER and not os.path.exists(PEER):
        subprocess.run(["make", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "peer"], check=True)
    threads = [int(t) for t in a.threads.split(",")]
    prompts = [int(n) for n in a.prompts.split(",")]
    bws = {t: bench.read_bandwidth(t) for t in threads}
    bench.emit(bench="machine", cpu=open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip(),
               cores=os.cpu_count(), dot_isa=bench.torchless._C.cpu_isa(),
               **{f"read_gb_s_{t}thread": round(b / 1e9, 2) for t, b in bws.items()})
    recs = []
    for name in a.models.split(","):
        for t in threads:
            recs.append(measure(name, t, prompts, a.gen, a.pairs, a.peer or None, bws[t]))
            bench.emit(**recs[-1])
    print(table(recs))


if __name__ == "__main__":
    main()
