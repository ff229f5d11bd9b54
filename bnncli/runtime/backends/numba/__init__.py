"""The compiled backend (numba): the same results as the NumPy kernels, bit for bit, computed in
machine code with the helper threads of a :class:`~bnncli.runtime.backends.numba.crew.Crew`.

* :mod:`.intrinsics`: the ``jit`` decorator (cached on disk where possible), popcount, atomic
  task counters, polite waiting;
* :mod:`.crew`: helper threads that stay awake between calls, so batch 1 uses a second core;
* :mod:`.binary_conv`: binarize, pack, XOR + popcount and the epilogue of a binary convolution;
* :mod:`.float_ops`: max and average pooling, the per-channel affine;
* :mod:`.group_conv`: grouped (depthwise) float convolutions.
* :mod:`.warmup`: compiles every kernel once (``python -m bnncli.runtime.backends.numba.warmup``).

Float convolutions, ReLU, PReLU, per-image channel scales (graph op ChannelMul), additions and
matrix products are the NumPy backend's (this class inherits them), so they are the reference's
by construction: each elementwise op rounds once per element, which a compiled loop could only
repeat at the same memory speed; the ops on ``[N, C]`` vectors (Sigmoid, Linear, the global
average pool) run in NumPy in both backends (bnncli.runtime.ops). Where they are split across
threads, the crew's helpers run those parts too (:meth:`NumbaKernels.run_tasks`), so the backend
has one set of helper threads, which never waits for a thread pool's threads to wake.

Imported only through bnncli.runtime.backends, which falls back to NumPy where numba is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from bnncli.runtime.backends.base import Buffers
from bnncli.runtime.backends.numba import binary_conv, crew, float_ops, group_conv, intrinsics
from bnncli.runtime.backends.numpy import NumpyKernels

__all__ = ["NumbaKernels", "cache_is_warm", "cache_is_writable", "compiled_functions"]


class NumbaKernels(NumpyKernels):
    """The compiled backend's kernels (bnncli.runtime.backends.base.Kernels); with ``threads`` > 1,
    a crew of ``threads - 1`` helpers, closed when these kernels are collected or closed."""

    name = "numba"

    def __init__(self, threads: int, buffers: Buffers) -> None:
        super().__init__(threads, buffers)
        self.crew = crew.Crew.for_owner(self, threads - 1) if threads > 1 else None

    def close(self) -> None:
        super().close()
        if self.crew is not None:
            self.crew.close()

    def run_tasks(self, fn: Callable, tasks: list) -> None:
        """``fn(task)`` for every task on the calling thread and the crew's helpers (NumPy work that
        releases the GIL: products, copies), each taking the next task from shared counters."""
        if self.crew is None or len(tasks) < 2:
            for task in tasks:
                fn(task)
            return
        self.crew.run_python(fn, tasks)

    def binary_conv(self, layer):
        return _BinaryConvRun(binary_conv.BinaryConvKernel(layer, buffers=self.buffers), self.crew)

    def max_pool(self, x, kernel, stride, pads, out_hw, relu, out, affine=None):
        return float_ops.max_pool(x, kernel, stride, pads, out_hw, relu, out=out, crew=self.crew, affine=affine)

    def avg_pool(self, x, kernel, stride, out_hw, out):
        return float_ops.avg_pool(x, kernel, stride, out_hw, out=out, crew=self.crew)

    def columns(self, xp, kernel, stride, dilation, out_hw, cols):
        return float_ops.columns(xp, kernel, stride, dilation, out_hw, cols)

    def affine(self, x, scale, shift, out):
        return float_ops.affine(x, scale, shift, out=out, crew=self.crew)

    def fan_out(self, targets: list, n: int, h: int, w: int, count: int):
        """A packer of a ``count``-channel map of ``n`` x ``h`` x ``w`` as a segment of the input
        of several binary convolutions (``targets``: (their run, the segment's first channel,
        their padding)), called right after the map is computed, and the buffers each then reads
        (``prepacked=``): ``(pack(x), buffers)``; None where they cannot be packed so."""
        if not all(isinstance(run, _BinaryConvRun) for run, _, _ in targets):
            return None
        kernels = [run.kernel for run, _, _ in targets]
        if not binary_conv.FanOut.usable(kernels):
            return None
        fan = binary_conv.FanOut(kernels, [first for _, first, _ in targets], [p for _, _, p in targets], n, h, w,
                                 count)
        return (lambda x: fan(x, crew=self.crew)), fan.buffers

    def group_conv(self, layer):
        def run(x, pads, out_hw):
            out = self.buffers.empty((layer.weight.shape[0], x.shape[1], *out_hw))
            return group_conv.group_conv(x, layer, pads, out_hw, out=out, crew=self.crew)

        return run


class _BinaryConvRun:
    """A binary convolution layer on this backend: ``run(x, pads, out, residual=None,
    prepacked=None)``, with ``prepacked`` from a fan-out (:meth:`NumbaKernels.fan_out`)."""

    def __init__(self, kernel: binary_conv.BinaryConvKernel, crew_: crew.Crew | None) -> None:
        self.kernel = kernel
        self.crew = crew_

    def __call__(self, x, pads, out, residual=None, prepacked=None):
        return self.kernel(x, pads, out=out, crew=self.crew, residual=residual, prepacked=prepacked)



def compiled_functions() -> list:
    """Every jitted function of this backend (the ``COMPILED`` list of each module)."""
    return [*intrinsics.COMPILED, *crew.COMPILED, *binary_conv.COMPILED, *float_ops.COMPILED, *group_conv.COMPILED]


def cache_is_writable() -> bool:
    """Whether numba found a writable place for its disk cache (else every process compiles)."""
    return not intrinsics.UNCACHED


def cache_is_warm() -> bool:
    """Whether a run loads every compiled kernel from numba's disk cache instead of compiling them:
    true once :func:`bnncli.runtime.backends.numba.warmup.compile_all` (the Docker image's build, or
    the first run here) compiled them all; false again when the code, numba or the CPU changes."""
    return intrinsics.functions_cached(compiled_functions())
