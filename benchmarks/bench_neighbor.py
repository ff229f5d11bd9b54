"""What a busy neighbour core does to the packed runtime: shared execution units, shared memory
bandwidth, or only time on the CPU.

    python benchmarks/bench_neighbor.py                  # one thread, pinned to CPU 0, neighbours on CPU 1
    python benchmarks/bench_neighbor.py --model runs/demo/model.bnn --size 224

Pins this process to one CPU and times, with no neighbour and then with each kind of neighbour
pinned to another CPU (a pure-Python loop, a NumPy memory stream larger than the caches, a
single-threaded BLAS product), three kernels of the compiled backend's kind: a binary convolution
whose data fit in L2 (execution units), a 5.6 MB copy (memory bandwidth), a float product (FMA
units); with ``--model``, a whole forward pass of that packed model too. It prints the best and the
median time of each: a neighbour that shares execution units or bandwidth slows the best time; one
that only competes for CPU time (more runnable threads than CPUs, time slices) moves the median.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

NEIGHBOURS = {
    "python loop": "while True: pass",
    "memory stream": "import numpy as np\nx = np.ones(8_000_000, np.float32)\ny = np.empty_like(x)\n"
                     "while True: np.copyto(y, x)",
    "BLAS product": "import numpy as np\na = np.ones((768, 768), np.float32)\nwhile True: a @ a",
}


def _times(fn, calls: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times), 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", help="a packed model (.bnn) whose forward pass is timed too")
    ap.add_argument("--size", type=int, default=None, help="input size for --model (default: its preprocessing)")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("needs at least two CPUs")
    os.sched_setaffinity(0, {cpus[0]})
    from threadpoolctl import threadpool_limits

    from bnncli.graph import bits
    from bnncli.runtime.backends import BinaryConvLayer
    from bnncli.runtime.backends.numba import binary_conv

    threadpool_limits(1)
    rng = np.random.default_rng(0)
    layer = BinaryConvLayer(bits.pack_bits(rng.random((256, 3, 3, 256)) < 0.5), 256, (1, 1), (1, 1), 0.0)
    kernel = binary_conv.BinaryConvKernel(layer)
    x = rng.standard_normal((256, 1, 14, 14)).astype(np.float32)
    out = np.empty((256, 1, 14, 14), np.float32)
    big, big2 = rng.standard_normal(1_400_000).astype(np.float32), np.empty(1_400_000, np.float32)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    tests = {"binary conv in L2": lambda: kernel(x, (1, 1, 1, 1), out=out),
             "5.6 MB copy": lambda: np.copyto(big2, big),
             "float product 256^3": lambda: a @ a}
    if args.model:
        from bnncli.runtime import load

        model = load(args.model, threads=1)
        size = args.size or model.preprocessing["image_size"]
        image = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        tests["forward pass"] = lambda: model(image)
    best: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in tests}
    for _ in range(args.rounds):
        for label, code in [("alone", None), *NEIGHBOURS.items()]:
            neighbour = None
            if code is not None:
                neighbour = subprocess.Popen(["taskset", "-c", str(cpus[1]), sys.executable, "-c", code],
                                             env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
                time.sleep(0.3)
            try:
                for name, fn in tests.items():
                    lo, mid = _times(fn, args.calls)
                    old = best[name].get(label)
                    best[name][label] = (min(lo, old[0]), min(mid, old[1])) if old else (lo, mid)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    print(f"load average {os.getloadavg()[0]:.2f}; ms as best / median of {args.calls} calls, best of "
          f"{args.rounds} rounds; this process on CPU {cpus[0]}, the neighbour on CPU {cpus[1]}")
    for name, row in best.items():
        print(f"{name:22s} " + "  ".join(f"{label}: {lo:.3f} / {mid:.3f}" for label, (lo, mid) in row.items()))


if __name__ == "__main__":
    main()
