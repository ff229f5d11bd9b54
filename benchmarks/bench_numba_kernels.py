"""The compiled binary conv (bnncli.runtime.backends.numba) against the NumPy kernel, layer by layer.

    python benchmarks/bench_numba_kernels.py                         # both models, batch 1 and 16, 1 thread
    python benchmarks/bench_numba_kernels.py --models resnete18 --batches 1 --threads 2 --json out.json
    python benchmarks/bench_numba_kernels.py --threads 2 --busy      # with another process on one core
    python benchmarks/bench_numba_kernels.py --as-avx2               # compiled as for an AVX2-only CPU

For every binary conv shape of BinaryDenseNet28 and ResNetE18 at 224 px (random weights and
inputs; BinaryDenseNet's convs with per-channel thresholds and some negated channels, as a folded
BatchNorm gives; pad value 0), both kernels do the whole op as ``BinaryConv`` runs it: binarize,
pack, XOR + popcount, float32 epilogue, each through its backend's ``Kernels.binary_conv`` as a
model's op prepares it once (NumPy: ``pack_planar(sign_bits(...))`` then ``binary_conv_fast``
on its thread pool; numba: a ``BinaryConvKernel`` on its crew of helper threads when
``--threads`` > 1). The two are timed alternately, ``--rounds`` rounds
of ``--repeats`` calls each, and the best round's median is kept (damps other processes' noise).
Every result is checked bit for bit against the NumPy one.

Reported per shape: milliseconds, G binary MAC/s (Cout * Ho * Wo * N * Cin * kh * kw per second)
and the speed-up; per model, the sum over its layers. ``--busy`` keeps a second process
busy-looping on one core while it measures. ``--as-avx2`` runs the whole script again in a
process whose numba compiles as for an AVX2-only CPU (``$NUMBA_CPU_NAME=haswell`` and this CPU's
features without AVX-512, with a cache directory of its own), so the narrow micro-kernel can be
measured on an AVX-512 machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from bnncli.graph import bits as B
from bnncli.runtime.backends import BinaryConvLayer
from bnncli.runtime.backends.numba import NumbaKernels
from bnncli.runtime.backends.numpy import NumpyKernels
from bnncli.runtime.context import Context


def _transition(channels: int, reduction: float) -> int:
    return int(round((channels // reduction) / 32)) * 32  # bnncli.models.binarydensenet.transition_channels


def binarydensenet28_layers(size: int = 224) -> list[dict]:
    """(cin, cout, hw, stride) of BinaryDenseNet28's binary convs: 3x3, pad 1, growth 64."""
    layers, channels, hw = [], 64, size // 4
    for n, reduction in zip((6, 6, 6, 5), (2.7, 2.7, 2.2, None)):
        for _ in range(n):
            layers.append(dict(cin=channels, cout=64, hw=hw, stride=1, threshold=True))
            channels += 64
        if reduction is not None:
            channels, hw = _transition(channels, reduction), hw // 2
    return layers


def resnete18_layers(size: int = 224) -> list[dict]:
    layers, channels, hw = [], 64, size // 4
    for stage, width in enumerate((64, 128, 256, 512)):
        for i in range(4):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(dict(cin=channels, cout=width, hw=hw, stride=stride, threshold=False))
            channels, hw = width, hw // stride
    return layers


MODELS = {"binarydensenet28": binarydensenet28_layers, "resnete18": resnete18_layers}


class Layer:
    def __init__(self, cin, cout, hw, stride, threshold, batch, seed=0):
        rng = np.random.default_rng(seed)
        self.cin, self.cout, self.hw, self.stride, self.batch = cin, cout, hw, (stride, stride), batch
        self.pads = (1, 1, 1, 1)
        self.x = rng.standard_normal((cin, batch, hw, hw)).astype(np.float32)
        self.wbits = B.pack_bits(rng.random((cout, 3, 3, cin)) < 0.5)
        self.threshold = rng.standard_normal(cin).astype(np.float32) * 0.1 if threshold else None
        self.negate = (rng.random(cin) < 0.3) if threshold else None
        layer = BinaryConvLayer(self.wbits, cin, self.stride, (1, 1), 0.0, self.threshold, self.negate)
        self.runs = {name: kernels.binary_conv(layer) for name, kernels in BACKENDS.items()}
        ho = (hw + 2 - 3) // stride + 1
        self.out = np.empty((cout, batch, ho, ho), np.float32)
        self.macs = cout * ho * ho * batch * cin * 9

    def call(self, backend: str) -> np.ndarray:
        return self.runs[backend](self.x, self.pads, self.out)


BACKENDS: dict[str, NumpyKernels] = {}


def measure(layer: Layer, rounds: int, repeats: int) -> dict:
    a = layer.call("numpy").copy()
    b = layer.call("numba")
    if not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
        raise AssertionError(f"numba result differs from NumPy's on {vars(layer)}")
    best = {"numpy": np.inf, "numba": np.inf}
    for _ in range(rounds):
        for name in ("numpy", "numba"):
            fn = lambda name=name: layer.call(name)  # noqa: E731
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            best[name] = min(best[name], float(np.median(times)))
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--busy", action="store_true", help="keep another process busy on one core meanwhile")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--as-avx2", action="store_true", help="compile as for a CPU with AVX2 but no AVX-512")
    args = p.parse_args(argv)
    if args.as_avx2:
        sys.exit(_rerun_as_avx2([a for a in (argv if argv is not None else sys.argv[1:]) if a != "--as-avx2"]))
    buffers = Context(1, "numpy")  # only for the scratch the kernels take
    BACKENDS.update(numpy=NumpyKernels(args.threads, buffers), numba=NumbaKernels(args.threads, buffers))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        run(args)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def _rerun_as_avx2(argv: list[str]) -> int:
    """This script in a process whose numba compiles for Haswell with this CPU's features minus AVX-512."""
    import os
    import tempfile

    import llvmlite.binding as ll

    ll.initialize_native_target()
    wide = ("avx512", "avx10", "amx", "evex512")
    features = ",".join(("+" if on and not name.startswith(wide) else "-") + name
                        for name, on in ll.get_host_cpu_features().items())
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": features, "NUMBA_CACHE_DIR": cache}
        return subprocess.call([sys.executable, __file__, *argv], env=env)


def run(args) -> None:
    results = []
    for model in args.models:
        for batch in args.batches:
            shapes: dict[tuple, int] = {}
            for spec in MODELS[model](args.size):
                key = tuple(spec.items())
                shapes[key] = shapes.get(key, 0) + 1
            from bnncli.runtime.backends.numba.intrinsics import VECTOR_ISA

            print(f"\n{model}, batch {batch}, {args.threads} thread(s), {VECTOR_ISA} micro-kernel"
                  + (", a busy core" if args.busy else ""))
            print(f"{'cin':>4} {'cout':>4} {'hw':>3} {'s':>1} {'x':>2} | {'numpy ms':>9} {'GMAC/s':>7} | "
                  f"{'numba ms':>9} {'GMAC/s':>7} | {'speed-up':>8}")
            total = {"numpy": 0.0, "numba": 0.0, "macs": 0}
            for key, count in shapes.items():
                spec = dict(key)
                layer = Layer(**spec, batch=batch)
                t = measure(layer, args.rounds, args.repeats)
                gn, gc = layer.macs / t["numpy"] / 1e9, layer.macs / t["numba"] / 1e9
                print(f"{spec['cin']:>4} {spec['cout']:>4} {spec['hw']:>3} {spec['stride']:>1} {count:>2} | "
                      f"{1e3 * t['numpy']:>9.3f} {gn:>7.0f} | {1e3 * t['numba']:>9.3f} {gc:>7.0f} | "
                      f"{t['numpy'] / t['numba']:>7.2f}x", flush=True)
                results.append(dict(model=model, batch=batch, threads=args.threads,
                                    busy=args.busy, count=count, **spec,
                                    macs=layer.macs, numpy_s=t["numpy"], numba_s=t["numba"]))
                total["numpy"] += count * t["numpy"]
                total["numba"] += count * t["numba"]
                total["macs"] += count * layer.macs
            tn, tc, macs = total["numpy"], total["numba"], total["macs"]
            print(f"{'all binary convs':>17} | {1e3 * tn:>9.2f} {macs / tn / 1e9:>7.0f} | "
                  f"{1e3 * tc:>9.2f} {macs / tc / 1e9:>7.0f} | {tn / tc:>7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
