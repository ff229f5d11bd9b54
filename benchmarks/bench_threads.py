"""Is bnncli's default CPU thread setting close to the best one, on an idle machine and with a busy core?

Each measurement is one `bnn` process: `bnn train` for one epoch of binarydensenet_tiny on
`builtin:shapes` at 32 px (images/s from its metrics.jsonl), then `bnn eval` of that run on the
validation split (images/s from `--json`). The settings:

* ``default``: what `bnn` does by itself (threads = the CPUs of the process's affinity set, idle
  OpenMP threads sleep: OMP_WAIT_POLICY=PASSIVE);
* ``--threads 1`` with ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP's spinning waits, PyTorch's behaviour
  outside `bnn`) and PASSIVE, and ``--threads N`` (N = the CPUs) with ACTIVE.

Conditions: ``idle`` (nothing else started) and ``busy`` (one extra process spinning on a core for
the whole measurement). Settings alternate within each round, rounds repeat, and the best of the
rounds is kept per setting; the CPU capacity a pure-Python loop gets is printed before and after.

    python benchmarks/bench_threads.py --rounds 2 --json threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import cpu_capacity  # noqa: E402

from bnncli.threads import available_cpus  # noqa: E402

BUSY = "while True: pass"


def _bnn(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "bnncli", *args], capture_output=True, text=True, env=env,
                         timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"bnn {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return res


def measure(setting: dict, data: str, work: Path, epochs: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(setting.get("env", {}))
    if setting["policy"] is not None:
        env["OMP_WAIT_POLICY"] = setting["policy"]
    threads = [] if setting["threads"] is None else ["--threads", str(setting["threads"])]
    run = Path(tempfile.mkdtemp(dir=work)) / "run"
    _bnn(["train", "--arch", "binarydensenet_tiny", "--data", data, "--epochs", str(epochs), "--image-size", "32",
          "--workers", "0", "--out", str(run), "--json", *threads], env)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ev = json.loads(_bnn(["eval", str(run), "--data", data, "--workers", "0", "--json", *threads], env).stdout)
    return {"train_img_s": max(m["images_per_s"] for m in metrics), "eval_img_s": ev["images_per_s"]}


def settings(cpus: int, spincounts: list[int]) -> dict[str, dict]:
    """The default, and by hand 1 and all threads with spinning and sleeping waits, and all threads
    with libgomp spinning for ``GOMP_SPINCOUNT`` polls before it sleeps."""
    out = {"default": {"threads": None, "policy": None}}
    for n in sorted({1, cpus}):
        for policy in ("ACTIVE", "PASSIVE"):
            out[f"threads {n}, {policy.lower()}"] = {"threads": n, "policy": policy}
    for count in spincounts:
        out[f"threads {cpus}, spin {count}"] = {"threads": cpus, "policy": None, "env": {"GOMP_SPINCOUNT": str(count)}}
    return out


def run_condition(name: str, rounds: int, data: str, work: Path, epochs: int, chosen: dict[str, dict]) -> dict:
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if name == "busy" else None
    try:
        best: dict[str, dict] = {}
        for r in range(rounds):
            for label, setting in chosen.items():
                got = measure(setting, data, work, epochs)
                print(f"{name} round {r + 1} {label}: train {got['train_img_s']:.0f} img/s, "
                      f"eval {got['eval_img_s']:.0f} img/s", flush=True)
                prev = best.setdefault(label, got)
                best[label] = {k: max(prev[k], got[k]) for k in got}
        return best
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def summarize(results: dict[str, dict]) -> dict:
    out = {}
    for cond, best in results.items():
        out[cond] = {}
        for metric in ("train_img_s", "eval_img_s"):
            top = max(v[metric] for v in best.values())
            out[cond][metric] = {"default": best["default"][metric], "best": top,
                                 "best_setting": max(best, key=lambda k: best[k][metric]),
                                 "default_vs_best": best["default"][metric] / top}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", default="builtin:shapes")
    ap.add_argument("--conditions", nargs="+", default=["idle", "busy"], choices=["idle", "busy"])
    ap.add_argument("--spincounts", type=int, nargs="*", default=[], help="also all threads with these GOMP_SPINCOUNT")
    ap.add_argument("--only", nargs="*", help="run only these settings (labels as printed)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = cpu_capacity()
        print(f"CPU capacity before: {before} of {available_cpus()} CPUs", flush=True)
        chosen = settings(available_cpus(), args.spincounts)
        if args.only:
            chosen = {k: v for k, v in chosen.items() if k in args.only or k == "default"}
        results = {c: run_condition(c, args.rounds, args.data, Path(tmp), args.epochs, chosen) for c in args.conditions}
        after = cpu_capacity()
    summary = summarize(results)
    print(f"CPU capacity after: {after}")
    for cond, metrics in summary.items():
        for metric, s in metrics.items():
            print(f"{cond} {metric}: default {s['default']:.0f}, best {s['best']:.0f} ({s['best_setting']}): "
                  f"default at {100 * s['default_vs_best']:.0f}% of the best")
    if args.json:
        args.json.write_text(json.dumps({"capacity_before": before, "capacity_after": after, "cpus": available_cpus(),
                                         "results": results, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
