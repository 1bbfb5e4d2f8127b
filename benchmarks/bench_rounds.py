"""Generation of one model by several builds of torchless and the peer, in alternating rounds
(one fresh process of each a round, in the order given), with medians and per-round ratios to
the peer: for comparing a branch with main, or a setting on and off, on a shared machine.

    python benchmarks/bench_rounds.py --model tinyllama-f16 --threads 1 --rounds 5 --gen 32 \\
        branch=/tmp/site-branch  nocopy=/tmp/site-branch:TORCHLESS_INTERLEAVE=0  main=/tmp/site-main

Each engine is LABEL=PYTHONPATH[:VAR=VALUE...] (a `pip install --target` of that build); the
peer runs after the first. Prints one JSON line a round, then a summary.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def ours(spec: str, path: str, threads: int, prompt: int, gen: int) -> dict:
    site, *env = spec.split(":")
    e = dict(os.environ, PYTHONPATH=site, **dict(v.split("=", 1) for v in env))
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import bench; "
            f"print(json.dumps(bench.ours({path!r}, {threads}, {prompt}, {gen})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engines", nargs="+", help="LABEL=PYTHONPATH[:VAR=VALUE...]")
    ap.add_argument("--model", default="tinyllama-f16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--peer", default=os.path.join(os.path.dirname(bench.CACHE), "peer-venv", "bin", "python"))
    a = ap.parse_args()
    path = bench.model_path(a.model)
    engines = dict(e.split("=", 1) for e in a.engines)
    print(json.dumps(dict(read_gb_s_1thread=round(bench.read_bandwidth() / 1e9, 2), threads=a.threads,
                          weight_mb_per_token=round(bench.matrix_bytes(path) / 1e6, 1))), flush=True)
    res = {k: [] for k in [*engines, "peer"]}
    for _ in range(a.rounds):
        for i, (label, spec) in enumerate(engines.items()):
            res[label].append(ours(spec, path, a.threads, a.prompt, a.gen))
            if i == 0:
                res["peer"].append(bench.peer(a.peer, path, a.threads, a.prompt, a.gen))
        print(json.dumps({k: v[-1] for k, v in res.items()}), flush=True)
    for k, v in res.items():
        summary = {m: statistics.median(r[m] for r in v) for m in v[0]}
        if k != "peer":
            ratios = [r["gen_tps"] / p["gen_tps"] for r, p in zip(v, res["peer"])]
            summary.update(gen_ratio_median=round(statistics.median(ratios), 3), gen_ratios=[round(x, 3) for x in ratios])
        print(json.dumps(dict(engine=k, **summary)), flush=True)


if __name__ == "__main__":
    main()
