"""Compile every kernel of the numba backend once, so that numba's disk cache holds them all.

``python -m bnncli.runtime.backends.numba.warmup`` runs each op of :class:`NumbaKernels` on small
real inputs, once on one thread (the serial loops) and once with a crew of helpers (the shared
loops), with the argument types the runtime's ops pass. Afterwards every function in the
modules' ``COMPILED`` lists is in the cache, and :func:`bnncli.runtime.backends.numba.cache_is_warm`
is true. The Docker image runs it at build time; the CLI runs :func:`compile_all` on the first
run that finds the cache cold, so that later runs compile nothing, whichever model they load.

Where numba has no writable cache (:data:`intrinsics.UNCACHED`), this compiles in memory only.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from bnncli.runtime.backends.base import BinaryConvLayer, GroupConvLayer
from bnncli.runtime.backends.numba import NumbaKernels, binary_conv, cache_is_warm, float_ops, intrinsics


class _Buffers:
    """Fresh arrays for the kernels' outputs (the runtime's Context reuses them; nothing to reuse here)."""

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, dtype=np.float32)

    def release(self, x: np.ndarray) -> None:
        pass


def _side(elements: int, per_position: int) -> int:
    """The side of a square map with at least ``elements`` / ``per_position`` positions."""
    return max(4, math.isqrt(-(-elements // per_position)) + 1)


def _run_ops(kernels: NumbaKernels) -> None:
    """Each op of ``kernels`` on maps large enough that a crew, when it has one, takes part."""
    rng = np.random.default_rng(0)
    cin = cout = 64  # one word of input bits; a block of output channels
    side = _side(binary_conv.CREW_MIN_WORK, cout * 9)
    x = rng.standard_normal((cin, 1, side, side), dtype=np.float32)
    wbits = rng.integers(0, 2**63, (cout, 3, 3, 1), dtype=np.uint64)
    layers = [
        BinaryConvLayer(wbits, cin, (1, 1), (1, 1), 0.0),
        BinaryConvLayer(wbits, cin, (2, 2), (1, 1), 1.0,
                        threshold=rng.standard_normal(cin, dtype=np.float32), negate=np.arange(cin) % 2 == 0,
                        scale=np.ones(cout, np.float32), bias=np.zeros(cout, np.float32)),
    ]
    for layer in layers:
        ho = (side + 2 - 3) // layer.stride[0] + 1
        kernels.binary_conv(layer)(x, (1, 1, 1, 1), np.empty((cout, 1, ho, ho), np.float32))
    # A dense block's input, packed by its producer for the layer that reads it (a fan-out).
    run = kernels.binary_conv(layers[0])
    fan = kernels.fan_out([(run, 0, (1, 1, 1, 1))], 1, side, side, cin)
    if fan is not None:
        pack, buffers = fan
        pack(x)
        run(x, (1, 1, 1, 1), np.empty((cout, 1, side, side), np.float32), prepacked=buffers[0])
    side = _side(float_ops.PARALLEL_MIN_ELEMENTS, 2)
    y = rng.standard_normal((2, 1, side, side), dtype=np.float32)
    half = (side + 2 - 3) // 2 + 1
    for relu in (False, True):
        kernels.max_pool(y, (3, 3), (2, 2), (1, 1, 1, 1), (half, half), relu, np.empty((2, 1, half, half), np.float32))
    kernels.avg_pool(y, (2, 2), (2, 2), (side // 2, side // 2), np.empty((2, 1, side // 2, side // 2), np.float32))
    kernels.affine(y, np.ones(2, np.float32), np.zeros(2, np.float32), np.empty(y.shape, np.float32))
    affine = (np.ones(2, np.float32), np.zeros(2, np.float32))  # an affine the pool applies
    kernels.max_pool(y, (2, 2), (2, 2), (0, 0, 0, 0), (side // 2, side // 2), True,
                     np.empty((2, 1, side // 2, side // 2), np.float32), affine)
    kernels.columns(y, (7, 7), (2, 2), (1, 1), ((side - 7) // 2 + 1,) * 2,
                    np.empty((2, 7, 7, 1, (side - 7) // 2 + 1, (side - 7) // 2 + 1), np.float32))
    kernels.columns(y, (3, 3), (1, 1), (1, 1), (side - 2, side - 2),
                    np.empty((2, 3, 3, 1, side - 2, side - 2), np.float32))
    depthwise = GroupConvLayer(rng.standard_normal((2, 1, 3, 3), dtype=np.float32), None, 2, (1, 1), (1, 1))
    kernels.group_conv(depthwise)(y, (1, 1, 1, 1), (side, side))
    # NumPy work split across the crew (matrix products, column copies): its task counters.
    kernels.run_tasks(lambda task: None, [0, 1])


def compile_all() -> None:
    """Compile (or load from numba's cache) every kernel of the backend, serial and shared."""
    for threads in (1, 2):
        kernels = NumbaKernels(threads, _Buffers())
        try:
            _run_ops(kernels)
        finally:
            kernels.close()
        if kernels.crew is not None:  # helpers compile their polling loop in their own thread
            for t in kernels.crew._threads:
                t.join(timeout=600)


def main() -> int:
    compile_all()
    if intrinsics.UNCACHED:
        print(f"numba has no writable cache here; compiled in memory only: {', '.join(intrinsics.UNCACHED)}",
              file=sys.stderr)
        return 1
    if not cache_is_warm():
        print("the numba kernels were compiled but numba's cache does not hold them all", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
