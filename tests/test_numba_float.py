"""The compiled float ops (bnncli.runtime.backends.numba.float_ops) against the NumPy ops, and the
Crew that runs compiled work on helper threads (bnncli.runtime.backends.numba.crew)."""

import gc
import time

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit, types  # noqa: E402

from bnncli.graph.padding import output_hw  # noqa: E402
from bnncli.runtime.backends import numpy as O  # noqa: E402
from bnncli.runtime.backends.numba import crew as NC  # noqa: E402
from bnncli.runtime.backends.numba import float_ops as F  # noqa: E402
from bnncli.runtime.backends.numba import intrinsics as NK  # noqa: E402
from bnncli.runtime.backends.numba.intrinsics import functions_cached  # noqa: E402


def same_bits(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32),
                                                                                       b.view(np.uint32))


def feature_map(c, n, h, w, seed, specials=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, n, h, w)).astype(np.float32)
    if specials:
        x[rng.random(x.shape) < 0.05] = np.inf
        x[rng.random(x.shape) < 0.05] = -np.inf
        x[rng.random(x.shape) < 0.02] = np.nan
    return x


@pytest.fixture(params=[None, "crew"])
def crew(request, monkeypatch):
    """No crew (one thread), or a crew of two helpers with every op large enough to be split."""
    if request.param is None:
        yield None
        return
    monkeypatch.setattr(F, "PARALLEL_MIN_ELEMENTS", 0)
    c = NC.Crew(2)
    yield c
    c.close()


POOLS = [  # kernel, stride, pads (top, left, bottom, right)
    ((3, 3), (2, 2), (1, 1, 1, 1)),  # the stem's max pool
    ((3, 3), (2, 2), (0, 0, 1, 1)),  # TensorFlow "same" on an even size
    ((2, 2), (2, 2), (0, 0, 0, 0)),  # BinaryDenseNet's transition
    ((3, 3), (1, 1), (1, 1, 1, 1)),
    ((5, 3), (2, 3), (2, 1, 2, 1)),
    ((1, 1), (1, 1), (0, 0, 0, 0)),
    ((4, 4), (3, 3), (1, 2, 2, 1)),
]


@pytest.mark.parametrize("kernel, stride, pads", POOLS)
@pytest.mark.parametrize("shape", [(3, 1, 9, 9), (5, 2, 12, 11), (1, 3, 7, 16)])
@pytest.mark.parametrize("relu", [False, True])
def test_max_pool_equals_numpy(kernel, stride, pads, shape, relu, crew):
    x = feature_map(*shape, seed=sum(shape))
    ho, wo = output_hw(shape[2:], kernel, stride, pads)
    expected = O.pool(x, kernel, stride, pads, np.maximum, -np.inf)
    if relu:
        expected = np.maximum(expected, np.float32(0))
    got = F.max_pool(x, kernel, stride, pads, (ho, wo), relu, crew=crew)
    assert np.array_equal(got, expected, equal_nan=True)
    finite = np.isfinite(expected) & (expected != 0)  # the bits, where no +0/-0 tie can differ
    assert np.array_equal(got.view(np.uint32)[finite], expected.view(np.uint32)[finite])


@pytest.mark.parametrize("kernel, stride, pads", POOLS)
@pytest.mark.parametrize("shape", [(3, 1, 9, 9), (2, 2, 12, 11)])
def test_max_pool_with_an_affine_equals_the_affine_then_the_pool(kernel, stride, pads, shape, crew):
    """``affine=`` (a BatchNorm read only by the pool) scales and shifts every tap as the affine op would."""
    x = feature_map(*shape, seed=3)
    rng = np.random.default_rng(4)
    scale = rng.standard_normal(shape[0]).astype(np.float32)
    shift = rng.standard_normal(shape[0]).astype(np.float32)
    ho, wo = output_hw(shape[2:], kernel, stride, pads)
    expected = O.pool(x * scale[:, None, None, None] + shift[:, None, None, None], kernel, stride, pads,
                      np.maximum, -np.inf)
    got = F.max_pool(x, kernel, stride, pads, (ho, wo), True, crew=crew, affine=(scale, shift))
    expected = np.maximum(expected, np.float32(0))
    assert np.array_equal(got, expected, equal_nan=True)


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 3)), ((1, 1), (1, 1))])
@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (4, 2, 13, 10)])
def test_avg_pool_equals_numpy_bit_for_bit(kernel, stride, shape, crew):
    x = feature_map(*shape, seed=len(shape), specials=False) * np.float32(1e3)
    ho, wo = output_hw(shape[2:], kernel, stride, (0, 0, 0, 0))
    expected = O.pool(x, kernel, stride, (0, 0, 0, 0), np.add, 0.0)
    expected /= np.float32(kernel[0] * kernel[1])
    assert same_bits(F.avg_pool(x, kernel, stride, (ho, wo), crew=crew), expected)


@pytest.mark.parametrize("shape", [(3, 1, 5, 7), (8, 3, 4, 4)])
def test_affine_equals_numpy_bit_for_bit_and_writes_in_place(shape, crew):
    x = feature_map(*shape, seed=7)
    rng = np.random.default_rng(8)
    scale = rng.standard_normal(shape[0]).astype(np.float32)
    shift = rng.standard_normal(shape[0]).astype(np.float32)
    expected = x * scale[:, None, None, None] + shift[:, None, None, None]
    assert same_bits(np.nan_to_num(F.affine(x, scale, shift, crew=crew)), np.nan_to_num(expected))
    y = x.copy()
    assert F.affine(y, scale, shift, out=y, crew=crew) is y
    assert np.array_equal(y, expected, equal_nan=True)


def test_non_contiguous_input_is_copied_not_misread():
    x = feature_map(4, 2, 10, 10, seed=3, specials=False)[:, :, ::2, :]  # a strided view
    expected = O.pool(np.ascontiguousarray(x), (2, 2), (2, 2), (0, 0, 0, 0), np.maximum, -np.inf)
    assert np.array_equal(F.max_pool(x, (2, 2), (2, 2), (0, 0, 0, 0), (2, 5)), expected)


_thread_id = types.ExternalFunction("pthread_self", types.uint64())


@njit(nogil=True)
def _record_threads(counters, tasks, spin):
    """A crew job: tasks from counters[0], each marks the thread that ran it into counters[16 + task]."""
    me = np.int64(_thread_id())
    while True:
        t = NK.fetch_add(counters, 0)
        if t >= tasks:
            break
        s = 0.0
        for i in range(spin):
            s += i * 0.5
        counters[16 + t] = me + np.int64(s > -1.0) - 1
        NK.fetch_add(counters, 8)


def _run_job(crew, tasks=64, spin=20000):
    counters = np.zeros(16 + tasks, np.int64)
    crew.run(_record_threads, (counters, tasks, spin))
    NK.wait_for(counters, 8, tasks)
    return set(counters[16:].tolist())


def test_crew_helpers_take_part():
    crew = NC.Crew(1)
    try:
        threads = set()
        deadline = time.monotonic() + 10  # a loaded machine may keep the helper off its core for a while
        while len(threads) < 2 and time.monotonic() < deadline:
            threads |= _run_job(crew)
        assert len(threads) == 2  # the caller and the helper both ran tasks
    finally:
        crew.close()


def test_a_sleeping_crew_wakes_for_the_next_job_and_stops_on_close():
    crew = NC.Crew(1, spin_rounds=0)  # helpers sleep as soon as a job is done
    deadline = time.monotonic() + 10
    while crew._sleepers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert crew._sleepers == 1
    threads = set()
    deadline = time.monotonic() + 10  # each job wakes the sleeping helper; a loaded machine may delay it
    while len(threads) < 2 and time.monotonic() < deadline:
        threads |= _run_job(crew)
        time.sleep(0.005)
    assert len(threads) == 2
    crew.close()
    for t in crew._threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert len(_run_job(crew)) == 1  # a closed crew: the caller alone


def test_crew_of_an_owner_closes_when_the_owner_goes():
    class Owner:
        pass

    owner = Owner()
    crew = NC.Crew.for_owner(owner, 2)
    del owner
    gc.collect()
    for t in crew._threads:
        t.join(timeout=10)
        assert not t.is_alive()


def test_cache_is_warm_after_calls():
    x = feature_map(2, 1, 6, 6, seed=0)
    F.max_pool(x, (3, 3), (2, 2), (1, 1, 1, 1), (3, 3))
    F.avg_pool(x, (2, 2), (2, 2), (3, 3))
    F.affine(x, np.ones(2, np.float32), np.zeros(2, np.float32))
    F.columns(x, (3, 3), (1, 1), (1, 1), (4, 4), np.empty((2, 3, 3, 1, 4, 4), np.float32))
    crew = NC.Crew(1)
    _run_job(crew)
    crew.run_python(lambda task: None, [0, 1])  # a Python job's task counters
    crew.close()
    for t in crew._threads:  # the helper compiles its polling loop in its own thread
        t.join(timeout=60)
    assert functions_cached(F.COMPILED) and functions_cached(NC.COMPILED)


@pytest.mark.parametrize("helpers", [1, 2])
def test_python_jobs_run_every_task_once_and_raise_the_first_error(helpers):
    """Crew.run_python: NumPy work split over the caller and the helpers (as the compiled backend
    splits matrix products and column copies); a task's error reaches the caller after the others."""
    crew = NC.Crew(helpers)
    try:
        a = np.random.default_rng(0).standard_normal((64, 96)).astype(np.float32)
        b = np.random.default_rng(1).standard_normal((96, 80)).astype(np.float32)
        out = np.full((64, 80), np.nan, np.float32)
        runs = []

        def rows(r):
            runs.append(r)
            np.matmul(a[r:r + 8], b, out=out[r:r + 8])

        for _ in range(20):
            runs.clear()
            crew.run_python(rows, list(range(0, 64, 8)))
            assert sorted(runs) == list(range(0, 64, 8))
            assert np.array_equal(out, a @ b)

        def fail(i):
            if i == 3:
                raise ValueError("task 3")

        with pytest.raises(ValueError, match="task 3"):
            crew.run_python(fail, list(range(8)))
        crew.run_python(rows, [0, 8])  # the helpers still serve
    finally:
        crew.close()


@pytest.mark.parametrize("kernel, stride, dilation", [((7, 7), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1)),
                                                      ((3, 2), (2, 3), (2, 1)), ((1, 1), (2, 2), (1, 1))])
def test_columns_equal_numpys(kernel, stride, dilation):
    """The compiled im2col (F.columns, one call without the GIL per band of a float convolution)
    copies what the NumPy kernels' conv_columns copies."""
    xp = feature_map(3, 2, 17, 19, seed=9)
    ho = (17 - (kernel[0] - 1) * dilation[0] - 1) // stride[0] + 1
    wo = (19 - (kernel[1] - 1) * dilation[1] - 1) // stride[1] + 1
    expected = O.conv_columns(xp, kernel, stride, dilation, (ho, wo), np.empty((3, *kernel, 2, ho, wo), np.float32))
    got = F.columns(xp, kernel, stride, dilation, (ho, wo), np.full((3, *kernel, 2, ho, wo), np.nan, np.float32))
    assert got.shape == expected.shape and np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    with pytest.raises(ValueError):
        F.columns(xp, kernel, stride, dilation, (ho, wo), np.empty((3, *kernel, 2, ho, wo + 1), np.float32))


def test_a_crew_is_ready_to_close_from_a_finalizer(tmp_path):
    """close() publishes through a compiled function; the crew compiles (or loads) it when it is
    made, so a finalizer that closes a never-used crew compiles nothing (a finalizer can fire while
    numba is compiling something else). In a new process with an empty cache."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        from bnncli.runtime.backends.numba import crew
        c = crew.Crew(1)
        print(len(crew._publish.overloads))
        c.close()
    """)
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["1"], r.stderr
