"""Latency and peak memory of the packed NumPy runtime against onnxruntime fp32, same model, same run.

    python benchmarks/bench_runtime.py                      # binarydensenet28 and resnete18 at 224
    python benchmarks/bench_runtime.py --models resnete18 --batches 1 --repeats 10 --json out.json

For each model (1000 classes, random weights, BatchNorms with random statistics and some negative
scales, as after training) the script writes a packed file (float32) and an ONNX file (the
float-equivalent graph: binary convs as +-1 float convs), then measures each engine in its own
subprocess, so peak memory is that engine's alone: the runtime worker imports NumPy only, the
onnxruntime worker onnxruntime only. Both get the same thread count (default: all CPUs). Engines
alternate over ``--rounds`` rounds and the best median is kept, which damps noise from other
processes. Latency is the median over ``--repeats`` calls after two warm-up calls; peak memory is
the process's peak RSS (VmHWM) and its growth over the RSS before the model was loaded.

It also reports parity at full size: the largest relative logit difference and top-1 agreement of
both engines against PyTorch, on the random-weight model and on one with exactly representable
weights (where float rounding cannot flip a binarization; see tests/conftest.py:make_exact).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(engine: str, path: str, batch: int, repeats: int, threads: int) -> dict:
    """Runs in a subprocess: load one engine, time it, report peak memory."""
    import numpy as np

    base = _status_kib("VmRSS")
    if engine == "runtime":
        from bnncli.runtime import load

        model = load(path, threads=threads)
        size = model.preprocessing["image_size"]
        run = model
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        size = session.get_inputs()[0].shape[2]

        def run(x):
            return session.run(None, {"input": x})[0]

    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(2):
        run(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    assert "torch" not in sys.modules, "the worker must not import torch"
    return {"median_ms": 1e3 * float(np.median(times)), "min_ms": 1e3 * min(times),
            "peak_rss_mib": _status_kib("VmHWM") / 1024, "model_peak_mib": (_status_kib("VmHWM") - base) / 1024}


def cpu_capacity() -> float:
    """How many CPUs a pure-Python loop gets right now (2.0 on an idle 2-core machine): two
    copies run at once against one alone. Shared machines vary; the figure is printed with the
    results so they can be read in context."""
    code = "import time\nt=time.perf_counter()\nfor i in range(3_000_000): pass\nprint(time.perf_counter()-t)"

    def run(n: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return max(float(p.communicate()[0]) for p in procs)

    alone = run(1)
    return round(2 * alone / run(2), 2)


def _measure(engine: str, path: Path, batch: int, repeats: int, threads: int) -> dict:
    here = str(Path(__file__).parent)
    code = (f"import json, sys; sys.path.insert(0, {here!r}); from bench_runtime import worker; "
            f"print(json.dumps(worker({engine!r}, {str(path)!r}, {batch}, {repeats}, {threads})))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{engine} worker failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _build(name: str, size: int, folder: Path, exact: bool = False):
    """(packed path, onnx path, torch model) for a 1000-class model."""
    import torch

    from bnncli import create_model
    from bnncli.artifacts.onnx_file import save_onnx
    from bnncli.data.presets import preprocessing
    from bnncli.deploy.lower import lower
    from bnncli.deploy.onnx_export import to_onnx
    from bnncli.deploy.pack import packed_graph
    from bnncli.runtime.format import write_packed

    # The test suite's weight helpers (tests/conftest.py): exact weights, or random BatchNorms.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import make_exact, randomize_batchnorm

    torch.manual_seed(0)
    model = create_model(name, num_classes=1000).eval()
    if exact:
        make_exact(model)
    else:
        randomize_batchnorm(model)
    meta = {"arch": name, "arch_kwargs": model.bnn_kwargs, "class_names": [f"class{i}" for i in range(1000)],
            "preprocessing": preprocessing("imagenet", size), "float_dtype": "float32", "producer": "benchmark"}
    graph = lower(model)
    tag = "exact" if exact else "random"
    packed = write_packed(folder / f"{name}-{tag}.bnn", packed_graph(graph), meta)
    onnx_path = save_onnx(to_onnx(graph, meta), folder / f"{name}-{tag}.onnx")
    return packed, onnx_path, model


def _parity(model, packed: Path, onnx_path: Path, size: int, exact: bool, threads: int) -> dict:
    import numpy as np
    import torch

    from bnncli.artifacts.onnx_file import ort_session
    from bnncli.deploy.verify import compare
    from bnncli.runtime import load

    if exact:
        g = torch.Generator().manual_seed(1)
        x = (torch.randint(-16, 17, (2, 3, size, size), generator=g).float() / 8).numpy()
    else:
        x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    rt = compare(ref, load(packed, threads=threads)(x))
    ox = compare(ref, ort_session(onnx_path, threads).run(None, {"input": x})[0])
    return {"runtime_max_rel_diff": rt.max_rel_diff, "runtime_top1": f"{rt.top1_agree}/{rt.samples}",
            "onnxruntime_max_rel_diff": ox.max_rel_diff, "onnxruntime_top1": f"{ox.top1_agree}/{ox.samples}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["binarydensenet28", "resnete18"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--repeats", type=int, default=20, help="timed calls at batch 1 (fewer at larger batches)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import numpy as np

    cpus = len(os.sched_getaffinity(0))
    results = {"machine": {"cpus": cpus, "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version(), "numpy": np.__version__,
                           "onnxruntime": __import__("onnxruntime").__version__, "threads": args.threads,
                           "cpu_capacity_before": cpu_capacity()}, "models": {}}
    print(f"CPU capacity now: {results['machine']['cpu_capacity_before']} of {cpus} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            packed, onnx_path, model = _build(name, args.size, Path(tmp))
            entry = {"packed_bytes": packed.stat().st_size, "onnx_bytes": onnx_path.stat().st_size, "batches": {}}
            for batch in args.batches:
                repeats = max(3, args.repeats // batch if batch > 1 else args.repeats)
                best: dict[str, dict] = {}
                for _ in range(args.rounds):
                    for engine in ("runtime", "onnxruntime"):
                        r = _measure(engine, packed if engine == "runtime" else onnx_path, batch, repeats,
                                     args.threads)
                        if engine not in best or r["median_ms"] < best[engine]["median_ms"]:
                            best[engine] = r
                ratio = best["runtime"]["median_ms"] / best["onnxruntime"]["median_ms"]
                entry["batches"][batch] = {**{f"{e}_{k}": v for e, r in best.items() for k, v in r.items()},
                                           "latency_ratio": ratio}
                rt, ox = best["runtime"], best["onnxruntime"]
                print(f"{name} batch {batch}: runtime {rt['median_ms']:.1f} ms "
                      f"(peak RSS {rt['peak_rss_mib']:.0f} MiB, +{rt['model_peak_mib']:.0f}), "
                      f"onnxruntime {ox['median_ms']:.1f} ms "
                      f"(peak RSS {ox['peak_rss_mib']:.0f} MiB, +{ox['model_peak_mib']:.0f}), ratio {ratio:.2f}x",
                      flush=True)
            if not args.no_parity:
                entry["parity_random_weights"] = _parity(model, packed, onnx_path, args.size, False, args.threads)
                ex_packed, ex_onnx, ex_model = _build(name, args.size, Path(tmp), exact=True)
                entry["parity_exact_weights"] = _parity(ex_model, ex_packed, ex_onnx, args.size, True, args.threads)
                print(f"{name} parity vs PyTorch at {args.size}: random weights {entry['parity_random_weights']}; "
                      f"exact weights {entry['parity_exact_weights']}", flush=True)
            results["models"][name] = entry
    results["machine"]["cpu_capacity_after"] = cpu_capacity()
    print(f"CPU capacity now: {results['machine']['cpu_capacity_after']} of {cpus} CPUs", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
