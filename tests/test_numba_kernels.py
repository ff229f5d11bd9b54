"""The compiled binary conv (bnncli.runtime.backends.numba.binary_conv) against the NumPy kernels, bit for bit.

Every case runs the NumPy path of ``BinaryConv`` (K.sign_bits -> K.pack_planar ->
K.binary_conv_fast in float32) and the fused numba kernel on the same float input, and compares
the float32 results' bits; without scale and bias the result is the exact dot product, which is
also checked against K.binary_conv_reference. Both the serial loop and the shared one (the
calling thread with a crew's helpers) run, with task chunks small enough that chunks straddle
rows and images.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("numba")

from bnncli.graph import bits as B  # noqa: E402
from bnncli.graph.padding import as_pads, output_hw  # noqa: E402
from bnncli.runtime.backends import BinaryConvLayer  # noqa: E402
from bnncli.runtime.backends import numpy as K  # noqa: E402
from bnncli.runtime.backends.numba import binary_conv as NK  # noqa: E402
from bnncli.runtime.backends.numba.crew import Crew  # noqa: E402
from bnncli.runtime.backends.numba.intrinsics import functions_cached, popcount  # noqa: E402

GEOMETRIES = [  # kernel, stride, padding, dilation
    (3, 1, (1, 1), 1),
    (3, 2, (1, 1), 1),
    (3, 2, (0, 0, 1, 1), 1),  # TensorFlow "same" on even sizes
    (3, 1, (2, 2), 2),
    (3, 2, (3, 3), 3),
    (3, 3, (1, 2, 0, 1), 1),
    (3, 1, (4, 4), 4),
    (3, 1, (0, 0), 1),
    (3, 2, (2, 0, 1, 3), 2),
    (1, 1, (0, 0), 1),
    (1, 2, (0, 0), 1),
    (1, 1, (1, 0, 0, 1), 1),
    (7, 2, (2, 2, 3, 3), 1),  # the stem's 7x7 stride 2 with "same" on 224
]
CHANNELS = [1, 7, 63, 64, 65, 127, 130]


def numpy_conv(x, wbits, channels, stride, pads, dilation, pad_value, threshold=None, negate=None, scale=None,
               bias=None):
    _, n, h, w = x.shape
    xbits = K.pack_planar(K.sign_bits(x, threshold, negate)).reshape(-1, n, h, w)
    return K.binary_conv_fast(xbits, wbits, channels, stride, pads, dilation, pad_value, dtype=np.float32,
                              scale=scale, bias=bias)


def numba_conv(x, wbits, channels, stride=(1, 1), pads=(0, 0), dilation=(1, 1), pad_value=0.0, threshold=None,
               negate=None, scale=None, bias=None, crew=None, **kw):
    """One call of a BinaryConvKernel built for these arguments (``kw``: out=, half_offset=)."""
    layer = BinaryConvLayer(wbits, channels, stride, dilation, pad_value, threshold, negate, scale, bias)
    return NK.BinaryConvKernel(layer)(x, pads, crew=crew, **kw)


def same_bits(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32),
                                                                                       b.view(np.uint32))


def make_case(cin, cout, kernel, n, h, w, seed):
    """Integer-valued input (many values equal to the thresholds), exact zeros of both signs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (cin, n, h, w)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = -0.0
    wbits = B.pack_bits(rng.random((cout, kernel, kernel, cin)) < 0.5)
    threshold = rng.integers(-1, 2, cin).astype(np.float32)
    threshold[::5] = -0.0
    negate = rng.random(cin) < 0.4
    scale = rng.standard_normal(cout).astype(np.float32)
    scale[0] = -scale[0] if scale[0] > 0 else scale[0]  # a negative scale turns +0.0 into -0.0
    bias = rng.standard_normal(cout).astype(np.float32)
    return x, wbits, threshold, negate, scale, bias


@pytest.fixture(params=["serial", "crew"])
def crew(request, monkeypatch):
    """None (the serial loop) or a crew of one helper (the shared loop, forced on small maps),
    with task chunks small enough to straddle rows and images."""
    monkeypatch.setattr(NK, "PACK_CHUNK", 11)
    monkeypatch.setattr(NK, "CONV_CHUNK", 6)
    if request.param == "serial":
        yield None
        return
    monkeypatch.setattr(NK, "CREW_MIN_WORK", 0)
    helpers = Crew(1)
    yield helpers
    helpers.close()


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"k{g[0]}s{g[1]}p{'-'.join(map(str, g[2]))}d{g[3]}")
def test_equals_numpy_path_bit_for_bit(geometry, pad_value, crew):
    k, s, pads, d = geometry
    for i, cin in enumerate(CHANNELS):
        n = 1 + i % 5
        h, w = 5 + i % 4, 7 + (2 * i) % 5
        if min(output_hw((h, w), (k, k), (s, s), as_pads(pads), (d, d))) < 1:
            h, w = h + d * k, w + d * k
        cout = (3, 8, 13, 64, 70)[i % 5]
        x, wbits, threshold, negate, scale, bias = make_case(cin, cout, k, n, h, w, seed=1000 * i + k + s + d)
        # threshold/negate/scale/bias in every combination over the channel counts
        thr = threshold if i % 3 else None
        neg = negate if i % 3 == 2 else None
        sc = scale if i % 2 else None
        bi = bias if i % 4 in (1, 2) else None
        expected = numpy_conv(x, wbits, cin, (s, s), pads, (d, d), pad_value, thr, neg, sc, bi)
        got = numba_conv(x, wbits, cin, (s, s), pads, (d, d), pad_value, thr, neg, sc, bi, crew)
        assert same_bits(got, expected), (cin, cout, n, h, w, thr is not None, neg is not None, sc is not None,
                                          bi is not None)


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("geometry", GEOMETRIES[::2], ids=lambda g: f"k{g[0]}s{g[1]}p{'-'.join(map(str, g[2]))}d{g[3]}")
def test_exact_dot_equals_reference(geometry, pad_value, crew):
    """Without scale and bias the output is the integer dot product of the +-1 values."""
    k, s, pads, d = geometry
    for cin in (1, 65, 130):
        x, wbits, threshold, negate, _, _ = make_case(cin, 5, k, 2, 6 + d * k, 7 + d * k, seed=cin + k + s + d)
        xbits = K.pack_planar(K.sign_bits(x, threshold, negate)).reshape(-1, *x.shape[1:])
        expected = K.binary_conv_reference(xbits, wbits, cin, (s, s), pads, (d, d), pad_value)
        got = numba_conv(x, wbits, cin, (s, s), pads, (d, d), pad_value, threshold, negate, crew=crew)
        assert got.dtype == np.float32
        assert np.array_equal(got.astype(np.int64), expected)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_batch_sizes_and_given_offsets(n, crew):
    """Batch sizes 1..5; half_offset passed in (as the op caches it), prepared weights, ``out=``."""
    cin, cout, h, w = 70, 19, 9, 8
    x, wbits, threshold, negate, scale, bias = make_case(cin, cout, 3, n, h, w, seed=n)
    weights = NK.prepare_weights(wbits)
    for pad_value, pads in ((0.0, (1, 1)), (-1.0, (0, 0, 1, 1)), (1.0, (1, 1))):
        ho, wo = output_hw((h, w), (3, 3), (2, 2), as_pads(pads))
        half = K.half_dot_offset(K.dot_offset(wbits, cin, h, w, (2, 2), pads, (1, 1), pad_value))
        assert half.shape == ((cout, ho * wo) if pad_value == 0 else (cout, 1))
        expected = numpy_conv(x, wbits, cin, (2, 2), pads, (1, 1), pad_value, threshold, negate, scale, bias)
        out = np.full((cout, n, ho, wo), np.nan, np.float32)
        layer = BinaryConvLayer(wbits, cin, (2, 2), (1, 1), pad_value, threshold, negate, scale, bias)
        got = NK.BinaryConvKernel(layer, weights)(x, pads, out=out, crew=crew, half_offset=half)
        assert got is out
        assert same_bits(got, expected)


def test_prepared_kernel_reused_across_sizes(crew):
    """A BinaryConvKernel called on several input sizes and paddings, as an op with "same" padding is."""
    cin, cout = 67, 9
    x, wbits, threshold, negate, scale, bias = make_case(cin, cout, 3, 2, 11, 12, seed=5)
    kernel = NK.BinaryConvKernel(BinaryConvLayer(wbits, cin, (2, 2), (1, 1), 0.0, threshold, negate, scale, bias))
    for h, w, pads in ((11, 12, (1, 1, 1, 1)), (10, 12, (0, 0, 1, 1)), (11, 12, (1, 0, 1, 1)), (11, 12, (1, 1, 1, 1))):
        xs = np.ascontiguousarray(x[:, :, :h, :w])
        expected = numpy_conv(xs, wbits, cin, (2, 2), pads, (1, 1), 0.0, threshold, negate, scale, bias)
        assert same_bits(kernel(xs, pads, crew=crew), expected)


def test_larger_maps_default_chunks():
    """A map larger than the default chunks, serial and parallel (when the work is large enough)."""
    cin, cout, n, h, w = 130, 72, 2, 30, 31
    x, wbits, threshold, negate, scale, bias = make_case(cin, cout, 3, n, h, w, seed=7)
    x += np.random.default_rng(8).standard_normal(x.shape).astype(np.float32) * 0.01
    expected = numpy_conv(x, wbits, cin, (1, 1), (1, 1), (1, 1), 0.0, threshold, negate, scale, bias)
    kernel = NK.BinaryConvKernel(BinaryConvLayer(wbits, cin, (1, 1), (1, 1), 0.0, threshold, negate, scale, bias))
    assert same_bits(kernel(x, (1, 1)), expected)
    for helpers in (1, 2, 3):  # more threads than the machine has cores, too
        crew = Crew(helpers)
        try:
            assert same_bits(kernel(x, (1, 1), crew=crew), expected)
        finally:
            crew.close()


def test_concurrent_calls_from_python_threads(monkeypatch):
    """Parallel calls from several Python threads at once (each waits for its own tasks only)."""
    monkeypatch.setattr(NK, "CREW_MIN_WORK", 0)
    cases = [make_case(cin, 11, 3, 2, 9, 10, seed=cin) for cin in (5, 64, 100)]
    kernels = [NK.BinaryConvKernel(BinaryConvLayer(c[1], c[0].shape[0], (1, 1), (1, 1), -1.0, *c[2:])) for c in cases]
    expected = [numpy_conv(c[0], c[1], c[0].shape[0], (1, 1), (1, 1), (1, 1), -1.0, *c[2:]) for c in cases]
    crews = [Crew(1) for _ in range(3)]  # a model's crew serves one forward pass at a time: one per caller
    try:
        with ThreadPoolExecutor(3) as callers:
            futures = [callers.submit(lambda i=i: kernels[i % 3](cases[i % 3][0], (1, 1), crew=crews[i % 3]))
                       for i in range(30)]
            assert all(same_bits(f.result(), expected[i % 3]) for i, f in enumerate(futures))
    finally:
        for c in crews:
            c.close()


def test_special_values_and_layouts():
    """NaN and infinities binarize as NumPy compares them; a non-contiguous input; a float64 threshold."""
    rng = np.random.default_rng(3)
    cin, cout, n, h, w = 9, 4, 2, 5, 6
    x = rng.standard_normal((cin, n, h, w)).astype(np.float32)
    x.flat[::7] = np.nan
    x.flat[1::11] = np.inf
    x.flat[2::13] = -np.inf
    wbits = B.pack_bits(rng.random((cout, 3, 3, cin)) < 0.5)
    threshold = rng.standard_normal(cin).astype(np.float32)
    threshold[0], threshold[1] = np.inf, -np.inf
    negate = rng.random(cin) < 0.5
    for thr, neg in ((None, None), (threshold, negate), (threshold.astype(np.float64) + 1e-9, negate)):
        expected = numpy_conv(x, wbits, cin, (1, 1), (1, 1), (1, 1), 1.0, thr, neg)
        got = numba_conv(x, wbits, cin, (1, 1), (1, 1), (1, 1), 1.0, thr, neg)
        assert same_bits(got, expected)
    ro = x.copy()
    ro.flags.writeable = False  # a read-only input (e.g. a memory map) is copied, not compiled for
    assert same_bits(numba_conv(ro, wbits, cin, (1, 1), (1, 1)), numpy_conv(x, wbits, cin, (1, 1), (1, 1),
                                                                                      (1, 1), 0.0))
    big = rng.standard_normal((cin, n, h, 2 * w)).astype(np.float32)[..., ::2]  # not contiguous
    assert same_bits(numba_conv(big, wbits, cin, (1, 1), (1, 1)), numpy_conv(big, wbits, cin, (1, 1), (1, 1),
                                                                                       (1, 1), 0.0))


def test_rejects_what_does_not_fit():
    x = np.zeros((5, 1, 4, 4), np.float32)
    wbits = B.pack_bits(np.zeros((2, 3, 3, 5), bool))
    with pytest.raises(ValueError, match="channels"):
        numba_conv(x, wbits, 6)
    with pytest.raises(TypeError, match="float32"):
        numba_conv(x.astype(np.float64), wbits, 5)
    with pytest.raises(ValueError, match="too small"):
        numba_conv(np.zeros((5, 1, 2, 2), np.float32), wbits, 5)
    with pytest.raises(ValueError, match="out"):
        numba_conv(x, wbits, 5, out=np.empty((2, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="pad_value"):
        numba_conv(x, wbits, 5, pad_value=0.5)


def test_cache_is_warm_after_calls():
    x, wbits, *_ = make_case(3, 2, 3, 1, 5, 5, seed=0)
    kernel = NK.BinaryConvKernel(BinaryConvLayer(wbits, 3, (1, 1), (1, 1), 0.0))
    kernel(x)  # serial
    old, crew = NK.CREW_MIN_WORK, Crew(1)
    try:
        NK.CREW_MIN_WORK = 0
        kernel(x, crew=crew)  # the shared loop
    finally:
        NK.CREW_MIN_WORK = old
        crew.close()
    NK.FanOut([kernel], [0], [(0, 0, 0, 0)], 1, 5, 5, 3)(x)  # a dense block's producer packing for its readers
    assert functions_cached(NK.COMPILED)


def test_popcount_intrinsic():
    from numba import njit

    @njit
    def count(words):
        total = 0
        for w in words:
            total += popcount(w)
        return total

    words = np.random.default_rng(0).integers(0, 2**64 - 1, 1000, dtype=np.uint64, endpoint=True)
    words[:3] = (0, 2**64 - 1, 1 << 63)
    assert count(words) == int(np.bitwise_count(words).sum())


def test_each_instruction_sets_micro_kernel_equals_numpy(tmp_path):
    """The micro-kernel is chosen by the CPU numba compiles for (intrinsics.VECTOR_ISA): compiled
    here as for an AVX2-only CPU (no AVX-512) too, in a process of its own with its own cache, it
    still equals the NumPy kernels bit for bit (fields longer than the 31 words a byte count holds)."""
    import subprocess
    import sys
    import textwrap

    import llvmlite.binding as ll

    ll.initialize_native_target()
    features = ll.get_host_cpu_features()
    if not features.get("avx2"):
        pytest.skip("this CPU has no AVX2")
    narrow = ",".join(("+" if on and not name.startswith(("avx512", "avx10", "amx", "evex512")) else "-") + name
                      for name, on in features.items())
    code = textwrap.dedent("""
        import numpy as np
        from bnncli.graph import bits as B
        from bnncli.runtime.backends import BinaryConvLayer
        from bnncli.runtime.backends import numpy as K
        from bnncli.runtime.backends.numba import binary_conv as NK, intrinsics
        print(intrinsics.VECTOR_ISA)
        rng = np.random.default_rng(0)
        for cin, cout, k, n, hw in ((130, 37, 3, 2, 9), (200, 64, 7, 1, 11), (64, 8, 1, 3, 5)):
            x = rng.integers(-2, 3, (cin, n, hw, hw)).astype(np.float32)
            wbits = B.pack_bits(rng.random((cout, k, k, cin)) < 0.5)
            pads = (k // 2,) * 4
            xb = K.pack_planar(K.sign_bits(x)).reshape(-1, n, hw, hw)
            expected = K.binary_conv_fast(xb, wbits, cin, (1, 1), pads, (1, 1), 0.0, dtype=np.float32)
            got = NK.BinaryConvKernel(BinaryConvLayer(wbits, cin, (1, 1), (1, 1), 0.0))(x, pads)
            assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), (cin, cout, k)
        print("equal")
    """)
    env = {**__import__("os").environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": narrow,
           "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["avx2", "equal"]


@pytest.mark.parametrize("h, w", [(9, 8), (8, 9), (1, 5), (3, 3)])
def test_half_offsets_are_split_into_one_value_per_channel_and_the_border(h, w):
    """The epilogue reads one half offset per channel and the zero-padding border's own values
    (NK.split_half_offsets): rebuilt, they give the NumPy kernels' whole table back, and on a map
    with an interior only border positions are special."""
    rng = np.random.default_rng(5)
    wbits = B.widen_words(B.pack_bits(rng.choice([-1.0, 1.0], size=(6, 3, 3, 70)).astype(np.float32)))
    pads = (1, 1, 1, 1)
    ho, wo = output_hw((h, w), (3, 3), (1, 1), pads, (1, 1))
    table = K.half_dot_offset(K.dot_offset(wbits, 70, h, w, (1, 1), pads, (1, 1), 0.0))
    assert table.shape == (6, ho * wo)
    split = NK.split_half_offsets(table, wo)
    rebuilt = np.repeat(split.h0[:, None], ho * wo, axis=1)
    rebuilt[:, split.specials] = split.hs
    assert np.array_equal(rebuilt, table)
    assert np.array_equal(split.nxt, np.searchsorted(split.specials, np.arange(ho * wo + 1)))
    y, x = np.divmod(split.specials, wo)
    if ho > 2 and wo > 2:
        assert ((y == 0) | (y == ho - 1) | (x == 0) | (x == wo - 1)).all()
        assert len(split.specials) == 2 * (ho + wo) - 4
    constant = NK.split_half_offsets(np.full((6, 1), 2.5, np.float32), 1)
    assert constant.specials.size == 0 and np.array_equal(constant.h0, np.full(6, 2.5, np.float32))


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("splits", [(130,), (64, 66), (70, 30, 30), (1, 62, 3, 64)])
def test_input_packed_by_fan_outs_equals_the_kernel_packing_it(monkeypatch, pad_value, splits, crew):
    """A concatenated input packed segment by segment by fan-outs (NK.FanOut: each segment for
    two readers at once, with their own thresholds and padding, the second reading five more
    channels after them; word boundaries anywhere), twice to show that a pass overwrites what
    the last one left, then read with ``prepacked=``: the same bits as each kernel binarizing
    and packing its whole input itself."""
    monkeypatch.setattr(NK, "FAN_OUT_CHUNK", 5)  # tasks straddle rows and images
    cin, n, h, w = sum(splits), 2, 7, 9
    pads = [(1, 1, 1, 1), (0, 2, 1, 0)]
    layers = []
    for c, seed in ((cin, 11), (cin + 5, 12)):
        _, wbits, threshold, negate, scale, bias = make_case(c, 13, 3, n, h, w, seed=seed)
        layers.append(BinaryConvLayer(wbits, c, (1, 1), (1, 1), pad_value, threshold, negate, scale, bias))
    kernels = [NK.BinaryConvKernel(layer) for layer in layers]
    fans, first = [], 0
    for count in splits:
        fans.append(NK.FanOut(kernels, [first, first], pads, n, h, w, count))
        first += count
    tail = NK.FanOut(kernels[1:], [cin], pads[1:], n, h, w, 5)
    for seed in (1, 2):
        x = make_case(cin + 5, 1, 3, n, h, w, seed=seed)[0]
        first = 0
        for fan, count in zip(fans, splits):
            fan(np.ascontiguousarray(x[first:first + count]), crew=crew)
            first += count
        tail(np.ascontiguousarray(x[cin:]), crew=crew)
        for layer, kernel, p, xf in zip(layers, kernels, pads, fans[0].buffers):
            xs = np.ascontiguousarray(x[:layer.channels])
            expected = NK.BinaryConvKernel(layer)(xs, p, crew=crew)
            assert same_bits(kernel(xs, p, crew=crew, prepacked=xf), expected), (seed, layer.channels)
    assert kernels[0].prepacked_input(n, h, w, pads[0]) is fans[0].buffers[0]
    with pytest.raises(ValueError):
        NK.FanOut(kernels, [cin - 2, 0], pads, n, h, w, 3)
    with pytest.raises(ValueError):
        fans[0](np.zeros((splits[0] + 1, n, h, w), np.float32))
    with pytest.raises(ValueError):
        kernels[0](x[:cin], pads[0], prepacked=fans[0].buffers[0][:-1])
