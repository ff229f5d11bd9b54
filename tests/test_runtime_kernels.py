"""Bit packing and the binary convolution kernels: the fast kernel against the slow, obviously
right one, and both against PyTorch's float convolution on pre-binarized values."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnncli.graph import bits as B
from bnncli.nn import BinaryConv2d
from bnncli.runtime.backends import numpy as K

POOL = ThreadPoolExecutor(2)


def test_sign_of_exact_zero_is_plus_one():
    x = np.array([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0], dtype=np.float32)
    assert K.sign_bits(x).tolist() == [False, False, True, True, True, True]
    t = np.zeros(6, np.float32)
    assert K.sign_bits(x, t).tolist() == [False, False, True, True, True, True]
    # A negated channel (BatchNorm with a negative scale) is +1 where x <= t, zero included.
    assert K.sign_bits(x, t, np.ones(6, bool)).tolist() == [True, True, True, True, False, False]


def test_thresholds_compare_each_channel_its_own_way():
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (6, 2, 3, 5)).astype(np.float32)  # many values equal to a threshold
    t = rng.integers(-2, 3, 6).astype(np.float32)
    negate = np.array([0, 1, 1, 0, 1, 0], bool)
    expected = np.where(negate[:, None, None, None], x <= t[:, None, None, None], x >= t[:, None, None, None])
    assert np.array_equal(K.sign_bits(x, t, negate), expected)
    assert np.array_equal(K.sign_bits(x, t, np.zeros(6, bool)), x >= t[:, None, None, None])


@pytest.mark.parametrize("channels", [1, 7, 31, 32, 33, 63, 64, 65, 130])
def test_pack_unpack_roundtrip_keeps_tail_bits_zero(channels):
    bits = np.random.default_rng(channels).random((3, channels)) < 0.5
    for word_bits in (32, 64):
        words = B.pack_bits(bits, word_bits)
        assert words.shape == (3, -(-channels // word_bits))
        assert B.tail_bits_clear(words, channels)
        assert np.array_equal(B.unpack_bits(words, channels), bits)
    # 32-bit file words widen to the same 64-bit compute words.
    assert np.array_equal(B.widen_words(B.pack_bits(bits, 32)), B.pack_bits(bits, 64))
    # Channel-first packing of activations agrees with the row packing.
    planar = K.pack_planar(bits.T.reshape(channels, 1, 3, 1))
    assert np.array_equal(planar.reshape(-1, 3).T, B.pack_bits(bits, 64))
    assert B.valid_bits_words(channels).tolist() == B.pack_bits(np.ones(channels, bool)).tolist()


def _case(cin, cout, kernel, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, cin, h, w)).astype(np.float32)
    x[0, :, 1, 1] = 0.0  # exact zeros binarize to +1
    weight = rng.standard_normal((cout, cin, kernel, kernel)).astype(np.float32)
    weight[0, 0] = 0.0
    xbits = K.pack_planar(K.sign_bits(x.transpose(1, 0, 2, 3)))
    wbits = B.widen_words(B.pack_bits(weight.transpose(0, 2, 3, 1) >= 0, 32))
    return x, weight, xbits, wbits


def _torch_reference(x, weight, stride, padding, dilation, pad_value):
    xb = torch.where(torch.from_numpy(x) >= 0, 1.0, -1.0)
    xb = F.pad(xb, (padding, padding, padding, padding), value=pad_value)
    wb = torch.where(torch.from_numpy(weight) >= 0, 1.0, -1.0)
    return F.conv2d(xb, wb, None, stride, 0, dilation).numpy()


GEOMETRIES = [  # kernel, stride, padding, dilation
    (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (3, 2, 3, 3), (3, 1, 0, 1), (1, 1, 0, 1), (1, 2, 0, 1),
]


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("cin", [1, 7, 63, 65, 130])
def test_fast_kernel_equals_reference_and_torch(cin, pad_value):
    for i, (k, s, p, d) in enumerate(GEOMETRIES):
        x, weight, xbits, wbits = _case(cin, 5, k, 7, 6, seed=cin * 10 + i)
        args = (xbits, wbits, cin, (s, s), (p, p), (d, d), pad_value)
        slow = K.binary_conv_reference(*args)
        fast = K.binary_conv_fast(*args)
        threaded = K.binary_conv_fast(*args, pool=POOL, workers=2)
        assert fast.dtype == np.int32
        assert np.array_equal(slow, fast) and np.array_equal(fast, threaded), (k, s, p, d)
        expected = _torch_reference(x, weight, s, p, d, pad_value)
        assert np.array_equal(slow.transpose(1, 0, 2, 3), expected), (k, s, p, d)


@pytest.mark.parametrize("block_words", [K._BLOCK_WORDS, 4096, 600])
def test_fast_kernel_splits_work_into_blocks_exactly(monkeypatch, block_words):
    # Smaller blocks than the default give several row blocks and then column blocks too.
    monkeypatch.setattr(K, "_BLOCK_WORDS", block_words)
    x, weight, xbits, wbits = _case(70, 40, 3, 70, 66, seed=1)
    args = (xbits, wbits, 70, (1, 1), (1, 1), (1, 1), 0.0)
    expected = _torch_reference(x, weight, 1, 1, 1, 0.0)
    for kw in ({}, {"pool": POOL, "workers": 2}):
        fast = K.binary_conv_fast(*args, **kw)
        assert np.array_equal(fast.transpose(1, 0, 2, 3), expected)


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
def test_float_epilogue_rounds_once_like_dot_times_scale_plus_bias(pad_value):
    # The float path forms dot / 2 and multiplies by 2 * scale: bit for bit dot * scale + bias.
    _, _, xbits, wbits = _case(65, 12, 3, 9, 8, seed=3)
    rng = np.random.default_rng(4)
    scale = rng.standard_normal(12).astype(np.float32)
    bias = rng.standard_normal(12).astype(np.float32)
    args = (xbits, wbits, 65, (2, 1), (1, 1), (1, 1), pad_value)
    dot = K.binary_conv_reference(*args).astype(np.float32)
    for s, b in ((scale, bias), (scale, None), (None, bias), (None, None)):
        expected = dot * (s if s is not None else np.ones(12, np.float32))[:, None, None, None]
        if b is not None:
            expected = expected + b[:, None, None, None]
        for kw in ({}, {"pool": POOL, "workers": 2}):
            got = K.binary_conv_fast(*args, scale=s, bias=b, dtype=np.float32, **kw)
            assert got.dtype == np.float32 and np.array_equal(got, expected)


@pytest.mark.parametrize("pad_value", [0.0, 1.0])
def test_fast_kernel_with_more_channels_than_positions(monkeypatch, pad_value):
    # Late stages at batch 1 (a few positions, hundreds of channels) loop channel-major; with no
    # size threshold, the position blocks are split across both threads.
    monkeypatch.setattr(K, "_PARALLEL_MIN_WORDS_PER_WORD_ROW", 0)
    x, weight, xbits, wbits = _case(130, 70, 3, 3, 4, seed=5)
    args = (xbits, wbits, 130, (1, 1), (1, 1), (1, 1), pad_value)
    for kw in ({}, {"pool": POOL, "workers": 2}):
        fast = K.binary_conv_fast(*args, **kw)
        assert np.array_equal(fast, K.binary_conv_reference(*args))
        assert np.array_equal(fast.transpose(1, 0, 2, 3), _torch_reference(x, weight, 1, 1, 1, pad_value))


def test_zero_pad_correction_is_the_border_only():
    _, _, _, wbits = _case(9, 4, 3, 5, 5, seed=2)
    corr = K.zero_pad_correction(wbits, 9, 5, 5, (1, 1), (1, 1), (1, 1)).reshape(4, 5, 5)
    assert not corr[:, 1:-1, 1:-1].any()
    assert corr[:, 0, 0].tolist() == (K.weight_sums(wbits, 9)[:, [0, 0, 0, 1, 2], [0, 1, 2, 0, 0]].sum(1)).tolist()


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
def test_binary_conv_op_matches_binaryconv2d_with_exact_zeros(pad_value):
    from bnncli.deploy.lowering import lower
    from bnncli.runtime.model import Model

    torch.manual_seed(0)
    layer = torch.nn.Sequential(BinaryConv2d(13, 6, 3, stride=2, padding=2, dilation=2, pad_value=pad_value))
    with torch.no_grad():
        layer[0].weight[0, :3] = 0.0  # sign(0) = +1 for weights too
    x = torch.randn(2, 13, 9, 8)
    x[:, :, ::2, ::3] = 0.0
    expected = layer(x).detach().numpy()
    got = Model(lower(layer), threads=2)(x.numpy())
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (3, 1, 1), (2, 2, 0), (2, 1, 1), (3, 3, 1), (1, 1, 0),
                                                   (4, 2, 2)])
def test_pools_leave_out_padding_as_pytorch(kernel, stride, padding):
    # Max pools skip taps that fall on padding instead of padding with -inf (with kernel 2 and
    # padding 1 no tap covers every output, so -inf fills first); a ReLU deferred into the pool
    # (ops.MaxPool.relu) gives the ReLU of the max, which is the max of the ReLUs.
    from bnncli.deploy.lowering import lower
    from bnncli.runtime.model import Model

    x = torch.randn(2, 5, 11, 9)
    pool = torch.nn.MaxPool2d(kernel, stride, padding)
    pools = [pool, torch.nn.Sequential(torch.nn.ReLU(), pool)]
    if padding == 0:
        pools.append(torch.nn.AvgPool2d(kernel, stride))
    for module in pools:
        layer = module if isinstance(module, torch.nn.Sequential) else torch.nn.Sequential(module)
        model = Model(lower(layer), threads=2)
        got = model(x.numpy())
        if isinstance(module, torch.nn.AvgPool2d):  # sums in another order than PyTorch
            assert np.allclose(got, layer(x).numpy(), rtol=1e-6, atol=1e-7)
            continue
        assert np.array_equal(got, layer(x).numpy()), module
        # With intermediates the ReLU runs on its own, and its value is the ReLU's.
        values = model.run(x.numpy(), intermediates=True)
        assert all(np.array_equal(values[k], layer[:i + 1](x).numpy()) for i, k in enumerate(list(values)[1:]))


def test_add_overwrites_only_inputs_nothing_reads_later():
    from bnncli.deploy.lowering import lower
    from bnncli.runtime.model import Model

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.relu = torch.nn.ReLU()
            self.pool = torch.nn.MaxPool2d(2)

        def forward(self, x):
            a = self.conv(x)
            b = x + a  # the graph input: never overwritten
            c = a + b  # `a` is read again below
            r = self.relu(c)  # deferred into the pool: `r` is `c` until the pool
            d = c + a  # `c` is still live under the deferred ReLU's name
            return self.pool(r) + self.pool(d)

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    given = x.numpy().copy()
    with torch.no_grad():
        expected = net(x).numpy()
    got = Model(lower(net), threads=2)(given)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(given, x.numpy())


@pytest.mark.parametrize("band_bytes", [1, 3000, 1 << 30])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel, stride, pads, dilation", [
    (7, 2, (2, 2, 3, 3), 1),  # the stem
    (3, 1, (1, 1, 1, 1), 1),
    (3, 2, (0, 0, 1, 1), 2),
])
def test_float_conv_in_bands_of_rows_equals_torch(monkeypatch, band_bytes, threads, kernel, stride, pads, dilation):
    """NumpyConv computes its columns and products per band of output rows of one image
    (K.BAND_BYTES: one row per band, bands with a shorter last one, one band per image): every
    band lands in its place, for each image of a batch and on two threads."""
    from bnncli.runtime.backends.base import ConvLayer
    from bnncli.runtime.context import Context

    monkeypatch.setattr(K, "BAND_BYTES", band_bytes)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 19, 23)).astype(np.float32)  # [C, N, H, W]
    weight = rng.standard_normal((5, 3, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    layer = ConvLayer(weight, bias, (stride, stride), (dilation, dilation))
    top, left, bottom, right = pads
    want = F.conv2d(F.pad(torch.from_numpy(x).double().permute(1, 0, 2, 3), (left, right, top, bottom)),
                    torch.from_numpy(weight).double(), torch.from_numpy(bias).double(), stride=stride,
                    dilation=dilation).permute(1, 0, 2, 3).numpy()
    ctx = Context(threads, "numpy")
    got = ctx.kernels.conv(layer)(x, pads, want.shape[2:])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
