"""The compiled binary conv (bnncli.runtime.numba_kernels) against the NumPy kernel, layer by layer.

    python benchmarks/bench_numba_kernels.py                         # both models, batch 1 and 16, 1 thread
    python benchmarks/bench_numba_kernels.py --models resnete18 --batches 1 --threads 2 --json out.json
    python benchmarks/bench_numba_kernels.py --threads 2 --busy      # with another process on one core

For every binary conv shape of BinaryDenseNet28 and ResNetE18 at 224 px (random weights and
inputs; BinaryDenseNet's convs with per-channel thresholds and some negated channels, as a folded
BatchNorm gives; pad value 0), both kernels do the whole op as ``BinaryConv`` runs it: binarize,
pack, XOR + popcount, float32 epilogue. The NumPy side is ``K.pack_planar(K.sign_bits(...))``
then ``K.binary_conv_fast`` (with the thread pool when ``--threads`` > 1), the compiled side a
:class:`numba_kernels.BinaryConvKernel` built once, as an op would hold it (sharing the same
pool); both get the cached ``half_offset``. The two are timed alternately, ``--rounds`` rounds
of ``--repeats`` calls each, and the best round's median is kept (damps other processes' noise).
Every result is checked bit for bit against the NumPy one.

Reported per shape: milliseconds, G binary MAC/s (Cout * Ho * Wo * N * Cin * kh * kw per second)
and the speed-up; per model, the sum over its layers. ``--busy`` keeps a second process
busy-looping on one core while it measures; ``--parallel prange`` runs the compiled kernel's
multi-threaded calls on numba's threading layer instead of the thread pool.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bnncli.runtime import kernels as K
from bnncli.runtime import numba_kernels as NK


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
        self.wbits = K.pack_bits(rng.random((cout, 3, 3, cin)) < 0.5)
        self.threshold = rng.standard_normal(cin).astype(np.float32) * 0.1 if threshold else None
        self.negate = (rng.random(cin) < 0.3) if threshold else None
        self.half_offset = K.half_dot_offset(K.dot_offset(self.wbits, cin, hw, hw, self.stride, self.pads, (1, 1), 0.0))
        self.fill = np.zeros(self.wbits.shape[-1], np.uint64)
        self.kernel = NK.BinaryConvKernel(self.wbits, cin, self.stride, (1, 1), 0.0, self.threshold, self.negate)
        ho = (hw + 2 - 3) // stride + 1
        self.macs = cout * ho * ho * batch * cin * 9

    def numpy(self, pool, threads):
        xb = K.pack_planar(K.sign_bits(self.x, self.threshold, self.negate)).reshape(-1, self.batch, self.hw, self.hw)
        return K.binary_conv_fast(xb, self.wbits, self.cin, self.stride, self.pads, (1, 1), 0.0, pool=pool,
                                  workers=threads, half_offset=lambda h, w: self.half_offset, fill=self.fill,
                                  dtype=np.float32)

    def numba(self, pool, threads):
        return self.kernel(self.x, self.pads, threads, self.half_offset, pool=pool)


def measure(layer: Layer, threads: int, pool, rounds: int, repeats: int) -> dict:
    a = layer.numpy(pool, threads)
    b = layer.numba(pool, threads)
    if not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
        raise AssertionError(f"numba result differs from NumPy's on {vars(layer)}")
    best = {"numpy": np.inf, "numba": np.inf}
    for _ in range(rounds):
        for name, fn in (("numpy", lambda: layer.numpy(pool, threads)), ("numba", lambda: layer.numba(pool, threads))):
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
    p.add_argument("--parallel", choices=["pool", "prange"], default=NK.PARALLEL)
    p.add_argument("--busy", action="store_true", help="keep another process busy on one core meanwhile")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    NK.PARALLEL = args.parallel
    pool = ThreadPoolExecutor(args.threads) if args.threads > 1 else None
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        run(args, pool)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def run(args, pool) -> None:
    results = []
    for model in args.models:
        for batch in args.batches:
            shapes: dict[tuple, int] = {}
            for spec in MODELS[model](args.size):
                key = tuple(spec.items())
                shapes[key] = shapes.get(key, 0) + 1
            print(f"\n{model}, batch {batch}, {args.threads} thread(s)"
                  + (f" ({args.parallel})" if args.threads > 1 else "") + (", a busy core" if args.busy else ""))
            print(f"{'cin':>4} {'cout':>4} {'hw':>3} {'s':>1} {'x':>2} | {'numpy ms':>9} {'GMAC/s':>7} | "
                  f"{'numba ms':>9} {'GMAC/s':>7} | {'speed-up':>8}")
            total = {"numpy": 0.0, "numba": 0.0, "macs": 0}
            for key, count in shapes.items():
                spec = dict(key)
                layer = Layer(**spec, batch=batch)
                t = measure(layer, args.threads, pool, args.rounds, args.repeats)
                gn, gc = layer.macs / t["numpy"] / 1e9, layer.macs / t["numba"] / 1e9
                print(f"{spec['cin']:>4} {spec['cout']:>4} {spec['hw']:>3} {spec['stride']:>1} {count:>2} | "
                      f"{1e3 * t['numpy']:>9.3f} {gn:>7.0f} | {1e3 * t['numba']:>9.3f} {gc:>7.0f} | "
                      f"{t['numpy'] / t['numba']:>7.2f}x", flush=True)
                results.append(dict(model=model, batch=batch, threads=args.threads, parallel=args.parallel,
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
