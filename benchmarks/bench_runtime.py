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

Distance to the limit: every model's binary and float multiply-accumulates per image are counted
from its graph, and the core's peaks are measured in this process at start: binary MAC/s from a
register-resident XOR + popcount loop built with the numba backend's own vector primitives (the
instructions its kernel uses, VPOPCNTQ on zmm where the CPU has AVX-512), float MAC/s from a
single-threaded 1024 x 1024 x 1024 float32 product (NumPy's BLAS). Each run then reports the
MAC/s it achieved (binary and float together: MACs / time) and ``limit_ms``, the time the peaks
allow on that many threads (binary MACs / binary peak + float MACs / float peak, divided by the
threads), so ``time / limit`` is the distance to the limit in one number. ``--profile`` adds, per
backend, where the time of a batch goes, op type by op type. The instruction set the compiled
kernels were built for (numba's host CPU name and its AVX2 / AVX-512 / VPOPCNTDQ features) is
printed and recorded with the results.
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


def _profile(model, x, repeats: int) -> dict[str, float]:
    """Milliseconds per call spent in each op type of a packed model (Conv split by kernel size)."""
    import collections

    totals: dict[str, float] = collections.defaultdict(float)
    for op in model.ops:
        key = f"{op.type}{op.kernel[0]}x{op.kernel[1]}" if op.type in ("Conv", "BinaryConv") else op.type
        call = type(op).__call__

        def timed(*args, _call=call, _op=op, _key=key, **kw):
            t = time.perf_counter()
            r = _call(_op, *args, **kw)
            totals[_key] += time.perf_counter() - t
            return r

        op.__class__ = type(type(op).__name__, (type(op),), {"__call__": lambda self, *a, _t=timed, **k: _t(*a, **k)})
    model(x)
    totals.clear()
    start = time.perf_counter()
    for _ in range(repeats):
        model(x)
    total = (time.perf_counter() - start) / repeats
    out = {k: 1e3 * v / repeats for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    out["between ops"] = 1e3 * total - sum(out.values())
    return out


def worker(engine: str, path: str, batch: int, repeats: int, threads: int, profile: bool = False) -> dict:
    """Runs in a subprocess: load one engine, time it, report peak memory (and, with ``profile``,
    the time per op type of the packed runtime's backends)."""
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
    result = {"median_ms": 1e3 * float(np.median(times)), "min_ms": 1e3 * min(times),
              "peak_rss_mib": _status_kib("VmHWM") / 1024, "model_peak_mib": (_status_kib("VmHWM") - base) / 1024}
    if profile and engine in ("numpy", "numba"):
        result["profile_ms"] = _profile(model, x, repeats)
    return result


def count_macs(path: Path) -> dict[str, int]:
    """Binary and float multiply-accumulates per image of a packed model, from its graph's shapes."""
    import numpy as np

    from bnncli.runtime import load

    model = load(path, threads=1, backend="numpy")
    size = model.preprocessing["image_size"]
    values = model.run(np.zeros((1, 3, size, size), np.float32), intermediates=True)
    binary = floating = 0
    for op in model.ops:
        out = values[op.node.outputs[0]]
        if op.type == "BinaryConv":
            binary += out.size * op.cin * op.kernel[0] * op.kernel[1]
        elif op.type == "Conv":
            floating += out.size * op.cin * op.kernel[0] * op.kernel[1]
        elif op.type == "Linear":
            floating += out.size * op.in_features
    return {"binary_macs": int(binary), "float_macs": int(floating)}


def instruction_set() -> dict:
    """What the compiled kernels are built for: numba compiles for the host CPU LLVM sees (or
    $NUMBA_CPU_NAME / $NUMBA_CPU_FEATURES), and the CPU's model name."""
    info: dict = {"cpu": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import llvmlite.binding as ll
        from numba.core import config

        ll.initialize_native_target()
        features = config.CPU_FEATURES or ll.get_host_cpu_features().flatten()
        enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
        info.update(llvm_cpu=config.CPU_NAME or ll.get_host_cpu_name(),
                    avx2="avx2" in enabled, avx512f="avx512f" in enabled, vpopcntdq="avx512vpopcntdq" in enabled)
        info["popcount"] = ("AVX-512 VPOPCNTQ (zmm)" if info["vpopcntdq"] else
                            "AVX-512 BW byte lookup (zmm)" if "avx512bw" in enabled else
                            "AVX2 byte lookup (vpshufb, ymm)" if info["avx2"] else "scalar or narrower vectors")
    except ImportError:
        info["popcount"] = "numba not installed"
    return info


def core_peaks() -> dict[str, float]:
    """Measured peaks of one core: binary MAC/s of a register-resident XOR + popcount loop (the numba
    backend's vector primitives, 16 accumulators as in its kernel) and float MAC/s of NumPy's BLAS."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    peaks = {}
    try:
        from numba import njit

        from bnncli.runtime.backends.numba.intrinsics import vload, vsplat, vstore, vxor_popcount_add, vzero
    except ImportError:
        pass
    else:
        @njit(nogil=True)
        def popcount_loop(w, x, rounds, out):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzero()
            b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = vzero()
            w0 = vload(w, 0)
            w1 = vload(w, 8)
            for r in range(rounds):
                x0 = vsplat(x[r & 7])
                x1 = vsplat(x[(r + 1) & 7])
                a0 = vxor_popcount_add(a0, x0, w0)
                a1 = vxor_popcount_add(a1, x0, w1)
                a2 = vxor_popcount_add(a2, x1, w0)
                a3 = vxor_popcount_add(a3, x1, w1)
                a4 = vxor_popcount_add(a4, x0, w1)
                a5 = vxor_popcount_add(a5, x1, w0)
                a6 = vxor_popcount_add(a6, x0, w0)
                a7 = vxor_popcount_add(a7, x1, w1)
                b0 = vxor_popcount_add(b0, x1, w0)
                b1 = vxor_popcount_add(b1, x1, w1)
                b2 = vxor_popcount_add(b2, x0, w0)
                b3 = vxor_popcount_add(b3, x0, w1)
                b4 = vxor_popcount_add(b4, x1, w1)
                b5 = vxor_popcount_add(b5, x0, w0)
                b6 = vxor_popcount_add(b6, x1, w1)
                b7 = vxor_popcount_add(b7, x0, w0)
            for i, a in enumerate((a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7)):
                vstore(out, 8 * i, a)

        w = np.arange(16, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x = np.arange(8, dtype=np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        out = np.zeros(128, np.uint64)
        rounds = 1 << 20
        popcount_loop(w, x, 16, out)
        best = min(_timed(lambda: popcount_loop(w, x, rounds, out)) for _ in range(5))
        peaks["binary_macs_per_s"] = rounds * 16 * 8 * 64 / best
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    with threadpool_limits(1):
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(3))
    peaks["float_macs_per_s"] = 1024**3 / best
    return peaks


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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


def _measure(engine: str, path: Path, batch: int, repeats: int, threads: int, profile: bool = False) -> dict:
    here = str(Path(__file__).parent)
    code = (f"import json, sys; sys.path.insert(0, {here!r}); from bench_runtime import worker; "
            f"print(json.dumps(worker({engine!r}, {str(path)!r}, {batch}, {repeats}, {threads}, {profile})))")
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
                     args, macs: dict, peaks: dict) -> dict:
    """The best median of each engine over the rounds, each backend's speed-up over onnxruntime, its
    MAC/s and its distance to the limit the core's peaks allow."""
    repeats = max(3, args.repeats // batch if batch > 1 else args.repeats)
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for engine in engines:
            path = packed if engine in ("numpy", "numba") else onnx_path
            r = _measure(engine, path, batch, repeats, threads)
            if engine not in best or r["median_ms"] < best[engine]["median_ms"]:
                best[engine] = r
    if args.profile:
        for engine in ("numpy", "numba"):
            if engine in best:
                best[engine]["profile_ms"] = _measure(engine, packed, batch, repeats, threads, True)["profile_ms"]
    ort_times = [best[e]["median_ms"] for e in ("ort", "ort-nospin") if e in best]
    ort_ms = min(ort_times) if ort_times else None  # without an onnxruntime engine: no ratio
    total_macs = batch * (macs["binary_macs"] + macs["float_macs"])
    limit_ms = None
    if "binary_macs_per_s" in peaks:
        limit_ms = 1e3 * batch * (macs["binary_macs"] / peaks["binary_macs_per_s"]
                                  + macs["float_macs"] / peaks["float_macs_per_s"]) / threads
    run = {"batch": batch, "threads": threads, "engines": best, "onnxruntime_best_ms": ort_ms,
           "speedup_vs_onnxruntime": {e: ort_ms / best[e]["median_ms"] for e in ("numpy", "numba")
                                      if e in best and ort_ms is not None},
           "limit_ms": limit_ms,
           "g_macs_per_s": {e: total_macs / best[e]["median_ms"] / 1e6 for e in best}}
    cells = ", ".join(f"{e} {r['median_ms']:.1f} ms (+{r['model_peak_mib']:.0f} MiB)" for e, r in best.items())
    speed = ", ".join(f"{e} {v:.2f}x" for e, v in run["speedup_vs_onnxruntime"].items())
    print(f"{name} batch {batch} threads {threads}: {cells}; faster than onnxruntime: {speed}", flush=True)
    rates = ", ".join(f"{e} {run['g_macs_per_s'][e]:.0f}" for e in best)
    limit = ""
    if limit_ms is not None and "numba" in best:
        limit = f"; the peaks allow {limit_ms:.1f} ms, numba is at {best['numba']['median_ms'] / limit_ms:.1f}x that"
    print(f"    G MAC/s (binary + float): {rates}{limit}", flush=True)
    for engine in ("numpy", "numba"):
        if "profile_ms" in best.get(engine, {}):
            prof = best[engine]["profile_ms"]
            top = ", ".join(f"{k} {v:.2f}" for k, v in prof.items())
            print(f"    {engine} ms per op type: {top}", flush=True)
            # The convolutions' own rates against the peaks (their share of the time from the profile).
            binary_ms = sum(v for k, v in prof.items() if k.startswith("BinaryConv"))
            float_ms = sum(v for k, v in prof.items() if k.startswith("Conv") or k == "Linear")
            rates = best[engine]["rates"] = {
                "binary_g_macs_per_s": batch * macs["binary_macs"] / binary_ms / 1e6 if binary_ms else None,
                "float_g_macs_per_s": batch * macs["float_macs"] / float_ms / 1e6 if float_ms else None}
            parts = []
            for kind in ("binary", "float"):
                rate, peak = rates[f"{kind}_g_macs_per_s"], peaks.get(f"{kind}_macs_per_s")
                if rate is not None:
                    parts.append(f"{kind} convs {rate:.0f} G MAC/s" + (f" ({1e9 * rate / peak / threads:.0%} of "
                                                                      f"{threads} x the peak)" if peak else ""))
            print(f"    {engine}: " + ", ".join(parts), flush=True)
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
    ap.add_argument("--profile", action="store_true", help="also time each op type of the packed runtime")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import importlib.util

    import numpy as np

    engines = args.engines or [e for e in ("numpy", "numba", "ort", "ort-nospin", "openvino")
                               if e not in ("numba", "openvino") or importlib.util.find_spec(e) is not None]
    cpus = len(os.sched_getaffinity(0))
    isa = instruction_set()
    peaks = core_peaks()
    results = {"machine": {"cpus": cpus, "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version(), "numpy": np.__version__,
                           "onnxruntime": __import__("onnxruntime").__version__, "threads": args.threads,
                           "instruction_set": isa, "core_peaks": peaks, "load_before": os.getloadavg(),
                           "cpu_capacity_before": cpu_capacity()}, "models": {}}
    print(f"CPU: {isa.get('cpu')}; kernels built for {isa.get('llvm_cpu', '?')}, popcount: {isa.get('popcount')}",
          flush=True)
    print("Core peaks (measured now, one thread): "
          + ", ".join(f"{k.replace('_macs_per_s', '')} {v / 1e9:.0f} G MAC/s" for k, v in peaks.items()), flush=True)
    print(f"CPU capacity now: {results['machine']['cpu_capacity_before']} of {cpus} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            packed, onnx_path, model = _build(name, args.size, Path(tmp))
            macs = count_macs(packed)
            print(f"{name}: {macs['binary_macs'] / 1e9:.2f} G binary and {macs['float_macs'] / 1e9:.2f} G float "
                  f"MACs per image", flush=True)
            entry = {"packed_bytes": packed.stat().st_size, "onnx_bytes": onnx_path.stat().st_size, "runs": [], **macs}
            for threads in args.threads:
                for batch in args.batches:
                    entry["runs"].append(_compare_engines(name, packed, onnx_path, engines, batch, threads, args,
                                                          macs, peaks))
            if not args.no_parity:
                entry["parity_random_weights"] = _parity(model, packed, onnx_path, args.size, False, args.threads[-1])
                ex_packed, ex_onnx, ex_model = _build(name, args.size, Path(tmp), exact=True)
                entry["parity_exact_weights"] = _parity(ex_model, ex_packed, ex_onnx, args.size, True,
                                                        args.threads[-1])
                print(f"{name} parity vs PyTorch at {args.size}: random weights {entry['parity_random_weights']}; "
                      f"exact weights {entry['parity_exact_weights']}", flush=True)
            results["models"][name] = entry
    results["machine"]["cpu_capacity_after"] = cpu_capacity()
    results["machine"]["load_after"] = os.getloadavg()
    print(f"CPU capacity now: {results['machine']['cpu_capacity_after']} of {cpus} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
