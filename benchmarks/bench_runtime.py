"""Latency and peak memory of the packed runtime (NumPy and numba backends) against onnxruntime fp32.

    python benchmarks/bench_runtime.py                      # binarydensenet28 and resnete18 at 224
    python benchmarks/bench_runtime.py --models resnete18 --batches 1 --threads 1 --repeats 10 --json out.json

For each model (1000 classes, random weights, BatchNorms with random statistics and some negative
scales, as after training) the script writes a packed file (float32) and an ONNX file (the
float-equivalent graph: binary convs as +-1 float convs), then measures each engine in its own
subprocess, so peak memory is that engine's alone: the runtime workers import NumPy (and numba)
only, the onnxruntime workers onnxruntime only. Engines: ``numpy`` and ``numba`` (the packed
runtime's backends; numba only where it is installed), ``ort`` (onnxruntime with its defaults) and
``ort-nospin`` (its intra-op threads told not to spin-wait), and ``openvino`` (float32) where
OpenVINO is installed. The ratio reported is against the faster of the two onnxruntime settings (the
less favourable one for bnncli). Each thread count of ``--threads`` (default: 1 and all CPUs) is
measured separately; all engines get the same count. Engines alternate over ``--rounds`` rounds and
the best median is kept, which damps noise from other processes. Latency is the median over
``--repeats`` calls after two warm-up calls; peak memory is
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
    if engine in ("numpy", "numba"):
        from bnncli.runtime import load

        model = load(path, threads=threads, backend=engine)
        size = model.preprocessing["image_size"]
        run = model
    elif engine == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                    "INFERENCE_PRECISION_HINT": "f32"})
        size = compiled.inputs[0].get_partial_shape()[2].get_length()

        def run(x):
            return compiled(x)[0]
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if engine == "ort-nospin":
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
    if engine == "numba":
        assert model.backend == "numba"
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
    from bnncli.deploy.lowering import lower
    from bnncli.deploy.onnx_export import to_onnx
    from bnncli.deploy.pack import packed_graph
    from bnncli.graph.format import write_packed

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
    from bnncli.deploy.verification import compare
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


def _compare_engines(name: str, packed: Path, onnx_path: Path, engines: list[str], batch: int, threads: int,
                     args) -> dict:
    """The best median of each engine over the rounds, and each backend's speed-up over onnxruntime."""
    repeats = max(3, args.repeats // batch if batch > 1 else args.repeats)
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for engine in engines:
            path = packed if engine in ("numpy", "numba") else onnx_path
            r = _measure(engine, path, batch, repeats, threads)
            if engine not in best or r["median_ms"] < best[engine]["median_ms"]:
                best[engine] = r
    ort_ms = min(best[e]["median_ms"] for e in ("ort", "ort-nospin") if e in best)
    run = {"batch": batch, "threads": threads, "engines": best, "onnxruntime_best_ms": ort_ms,
           "speedup_vs_onnxruntime": {e: ort_ms / best[e]["median_ms"] for e in ("numpy", "numba") if e in best}}
    cells = ", ".join(f"{e} {r['median_ms']:.1f} ms (+{r['model_peak_mib']:.0f} MiB)" for e, r in best.items())
    speed = ", ".join(f"{e} {v:.2f}x" for e, v in run["speedup_vs_onnxruntime"].items())
    print(f"{name} batch {batch} threads {threads}: {cells}; faster than onnxruntime: {speed}", flush=True)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["binarydensenet28", "resnete18"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--repeats", type=int, default=20, help="timed calls at batch 1 (fewer at larger batches)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, len(os.sched_getaffinity(0))}))
    ap.add_argument("--engines", nargs="+", default=None, help="default: every engine installed here")
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import importlib.util

    import numpy as np

    engines = args.engines or [e for e in ("numpy", "numba", "ort", "ort-nospin", "openvino")
                               if e not in ("numba", "openvino") or importlib.util.find_spec(e) is not None]
    cpus = len(os.sched_getaffinity(0))
    results = {"machine": {"cpus": cpus, "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version(), "numpy": np.__version__,
                           "onnxruntime": __import__("onnxruntime").__version__, "threads": args.threads,
                           "cpu_capacity_before": cpu_capacity()}, "models": {}}
    print(f"CPU capacity now: {results['machine']['cpu_capacity_before']} of {cpus} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            packed, onnx_path, model = _build(name, args.size, Path(tmp))
            entry = {"packed_bytes": packed.stat().st_size, "onnx_bytes": onnx_path.stat().st_size, "runs": []}
            for threads in args.threads:
                for batch in args.batches:
                    entry["runs"].append(_compare_engines(name, packed, onnx_path, engines, batch, threads, args))
            if not args.no_parity:
                entry["parity_random_weights"] = _parity(model, packed, onnx_path, args.size, False, args.threads[-1])
                ex_packed, ex_onnx, ex_model = _build(name, args.size, Path(tmp), exact=True)
                entry["parity_exact_weights"] = _parity(ex_model, ex_packed, ex_onnx, args.size, True,
                                                        args.threads[-1])
                print(f"{name} parity vs PyTorch at {args.size}: random weights {entry['parity_random_weights']}; "
                      f"exact weights {entry['parity_exact_weights']}", flush=True)
            results["models"][name] = entry
    results["machine"]["cpu_capacity_after"] = cpu_capacity()
    print(f"CPU capacity now: {results['machine']['cpu_capacity_after']} of {cpus} CPUs", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
