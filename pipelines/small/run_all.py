"""Run the paper's ablations on your own data: every recipe in pipelines/small/ for several seeds, then
``bnn compare --group-seeds`` over the runs (one row per arm, mean ± standard deviation over the seeds).

    python pipelines/small/run_all.py --data DIR [--out runs/ablations] [--seeds 0 1 2] [--jobs 2]

Each run is ``bnn train --recipe pipelines/small/ARM.toml --data DIR --seed N -o OUT/ARM-seedN``, its
progress in ``OUT/ARM-seedN.log``. Run the command again after an interruption: finished runs are kept,
unfinished ones continue with ``--resume``. Options after ``--`` go to every ``bnn train``
(e.g. ``-- --epochs 5 --flip 0``). Exit status: 0 when every run and the comparison succeeded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARMS = ("resnete_baseline", "resnete_binary_downsample", "resnete_xnor_scaling", "resnete_approxsign",
        "binarydensenet")


def bnn(*args: str) -> list[str]:
    """``bnn ARGS`` through this Python, so the runner works without ``bnn`` on PATH."""
    return [sys.executable, "-m", "bnncli", *args]


def state(run: Path) -> str:
    """"new" (no directory or an empty one), "done" (every epoch of its config recorded), else "partial"."""
    if not run.exists() or not any(run.iterdir()):
        return "new"
    try:
        epochs = json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]["epochs"]
        done = sum(1 for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, ValueError, KeyError, TypeError):
        return "partial"
    return "done" if done >= epochs else "partial"


def command(arm: str, seed: int, args: argparse.Namespace, extra: list[str]) -> list[str] | None:
    run = args.out / f"{arm}-seed{seed}"
    status = state(run)
    if status == "done":
        return None
    if status == "partial":
        if not (run / "last.pt").is_file():
            raise SystemExit(f"run_all: {run} holds no checkpoint to resume from; remove it to start that run again")
        return bnn("train", "--resume", str(run), "--log-every", "20", *threads(args))
    return bnn("train", "--recipe", str(HERE / f"{arm}.toml"), "--data", args.data, "--seed", str(seed),
               "-o", str(run), "--log-every", "20", *threads(args), *extra)


def threads(args: argparse.Namespace) -> list[str]:
    return ["--threads", str(args.threads)] if args.threads else []


def run_one(arm: str, seed: int, cmd: list[str], out: Path) -> tuple[str, int, float]:
    name = f"{arm}-seed{seed}"
    print(f"start  {name}: {' '.join(cmd[2:])}", flush=True)
    start = time.perf_counter()
    with open(out / f"{name}.log", "a", encoding="utf-8") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - start
    print(f"{'done ' if code == 0 else 'FAIL '}  {name} in {seconds:.0f} s" +
          ("" if code == 0 else f" (exit {code}; see {out / (name + '.log')})"), flush=True)
    return name, code, seconds


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="what bnn train --data takes: a folder or builtin:NAME")
    parser.add_argument("--out", type=Path, default=Path("runs/ablations"), help="directory of the runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="N")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, metavar="ARM",
                        help=f"recipes to run (default: all of {', '.join(ARMS)})")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (give each --threads 1 on a small CPU)")
    parser.add_argument("--threads", type=int, default=None, help="--threads of each bnn train")
    args = parser.parse_args(own)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [(arm, seed, command(arm, seed, args, extra)) for arm in args.arms for seed in args.seeds]
    for arm, seed, cmd in todo:
        if cmd is None:
            print(f"kept   {arm}-seed{seed} (finished before)", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda t: run_one(t[0], t[1], t[2], args.out), [t for t in todo if t[2]]))
    failed = [name for name, code, _ in results if code != 0]
    if failed:
        print(f"run_all: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    runs = [str(args.out / f"{arm}-seed{seed}") for arm in args.arms for seed in args.seeds]
    return subprocess.run(bnn("compare", *runs, "--group-seeds", "--plot", str(args.out / "compare.png"),
                              "--force"), check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
