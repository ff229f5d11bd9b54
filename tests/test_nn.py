"""Quantizers and BinaryConv2d: exact zeros, gradient masks, equality with a float conv."""

import pytest
import torch
import torch.nn.functional as F

from bnncli.errors import UsageError
from bnncli.nn import (
    BinaryConv2d,
    FloatConv2d,
    FloatLinear,
    approx_sign,
    binary_sign,
    clamp_latent_weights,
    round_to_float16,
    set_float_weights,
    ste_sign,
)


def test_sign_of_exact_zero_is_plus_one():
    x = torch.tensor([-1.5, -1e-30, -0.0, 0.0, 1e-30, 2.0])
    assert binary_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    assert torch.sign(torch.tensor(0.0)).item() == 0.0  # why we never use torch.sign bare


@pytest.mark.parametrize("threshold", [1.0, 1.25, 1.3])
def test_ste_gradient_is_cancelled_outside_threshold(threshold):
    x = torch.tensor([-2.0, -threshold - 1e-3, -threshold, -0.5, 0.0, 0.5, threshold, threshold + 1e-3, 2.0],
                     requires_grad=True)
    y = ste_sign(x, threshold)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]
    y.backward(torch.arange(1.0, 10.0))
    expected = torch.arange(1.0, 10.0) * torch.tensor([0, 0, 1, 1, 1, 1, 1, 0, 0.0])
    assert torch.equal(x.grad, expected)


def test_identity_ste_passes_every_gradient():
    x = torch.tensor([-5.0, 0.0, 5.0], requires_grad=True)
    ste_sign(x, float("inf")).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_approx_sign_gradient():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0], requires_grad=True)
    y = approx_sign(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 0.0, 1.0, 2.0, 1.5, 0.0, 0.0]))


def _reference(x, layer):
    """Float conv on values binarized and padded by hand."""
    xb = torch.where(x >= 0, 1.0, -1.0)
    ph, pw = layer.padding
    xb = F.pad(xb, (pw, pw, ph, ph), value=layer.pad_value)
    wb = torch.where(layer.weight >= 0, 1.0, -1.0)
    return F.conv2d(xb, wb, None, layer.stride, 0, layer.dilation)


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("stride,dilation,kernel", [(1, 1, 3), (2, 1, 3), (1, 2, 3), (2, 3, 3), (1, 1, 1), (2, 1, 1)])
def test_binary_conv_equals_float_conv_on_prebinarized_values(pad_value, stride, dilation, kernel):
    torch.manual_seed(0)
    padding = dilation * (kernel // 2)
    layer = BinaryConv2d(5, 7, kernel, stride=stride, padding=padding, dilation=dilation, pad_value=pad_value)
    x = torch.randn(2, 5, 9, 11)
    x[0, :, 2, 3] = 0.0  # exact zeros must count as +1
    with torch.no_grad():
        layer.weight[0, 0] = 0.0
    y = layer(x)
    ref = _reference(x, layer)
    assert y.shape == ref.shape
    assert torch.equal(y, ref)
    # Outputs of a binary conv are integers of the parity of the fan-in where nothing is zero-padded.
    assert torch.equal(y, y.round())


def test_pad_values_give_different_borders():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 6)
    outs = {}
    for v in (0.0, -1.0, 1.0):
        layer = BinaryConv2d(3, 4, 3, padding=1, pad_value=v)
        with torch.no_grad():
            layer.weight.fill_(1.0)
        outs[v] = layer(x)
    assert torch.equal(outs[0.0][..., 1:-1, 1:-1], outs[1.0][..., 1:-1, 1:-1])
    assert not torch.equal(outs[0.0], outs[1.0]) and not torch.equal(outs[-1.0], outs[1.0])
    assert torch.equal(outs[1.0] - outs[0.0], outs[0.0] - outs[-1.0])  # border contribution is linear in pad value


def test_weight_gradient_variants_and_latent_clamp():
    x = torch.randn(2, 2, 5, 5)
    larq = BinaryConv2d(2, 3, 3, padding=1, clip_threshold=1.0, weight_gradient="larq")
    bmx = BinaryConv2d(2, 3, 3, padding=1, clip_threshold=1.0, weight_gradient="bmxnet")
    with torch.no_grad():
        for layer in (larq, bmx):
            layer.weight.copy_(torch.linspace(-2, 2, 54).view(3, 2, 3, 3))
    upstream = torch.randn(2, 3, 5, 5)
    for layer in (larq, bmx):
        (layer(x) * upstream).sum().backward()
    outside = larq.weight.detach().abs() > 1.0
    assert outside.any() and (~outside).any()
    assert torch.all(larq.weight.grad[outside] == 0)
    assert torch.equal(larq.weight.grad[~outside], bmx.weight.grad[~outside])  # plain STE inside
    assert torch.count_nonzero(bmx.weight.grad[outside]) > 0  # identity variant keeps them
    clamp_latent_weights(torch.nn.Sequential(larq, bmx))
    assert larq.weight.abs().max().item() == 1.0
    assert bmx.weight.abs().max().item() == 2.0


def test_xnor_scaling_multiplies_by_mean_abs_weight():
    torch.manual_seed(1)
    plain = BinaryConv2d(4, 6, 3, padding=1)
    scaled = BinaryConv2d(4, 6, 3, padding=1, scaling="xnor")
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(1, 4, 5, 5)
    alpha = plain.weight.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
    assert torch.allclose(scaled(x), plain(x) * alpha)


@pytest.mark.parametrize("kwargs", [{"pad_value": 0.5}, {"scaling": "bogus"}, {"clip_threshold": 0},
                                    {"activation_gradient": "nope"}, {"weight_gradient": "nope"}])
def test_bad_options_raise_usage_error(kwargs):
    with pytest.raises(UsageError):
        BinaryConv2d(2, 2, 3, **kwargs)


def test_binary_conv_runs_under_bf16_autocast():
    layer = BinaryConv2d(3, 4, 3, padding=1, pad_value=-1.0)
    x = torch.randn(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert torch.equal(y.float(), layer(x))  # +-1 sums are exact in bf16 at this fan-in


def test_round_to_float16_is_exact_and_passes_gradients_straight_through():
    w = torch.tensor([0.1, -1e-7, 3.0e-5, 1.0 / 3, 1e6, -1e6], requires_grad=True)
    r = round_to_float16(w)
    expected = w.detach().clamp(-65504, 65504).half().float()
    assert torch.equal(r, expected)  # nearest float16 value, saturated, bit for bit
    assert torch.equal(r.half().float(), r)  # representable: storing it as float16 loses nothing
    r.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_float_layers_compute_with_float16_valued_weights_only_when_asked():
    torch.manual_seed(0)
    conv, fc = FloatConv2d(3, 4, 3, padding=1, bias=True), FloatLinear(5, 2)
    x, v = torch.randn(2, 3, 6, 6), torch.randn(2, 5)
    model = torch.nn.ModuleList([conv, fc])
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))  # float32 by default
    assert set_float_weights(model, "float16") == 2
    assert torch.equal(conv(x), F.conv2d(x, conv.weight.half().float(), conv.bias.half().float(), padding=1))
    assert torch.equal(fc(v), F.linear(v, fc.weight.half().float(), fc.bias.half().float()))
    assert not torch.equal(conv.weight.detach(), conv.weight.detach().half().float())  # the latent stays float32
    fc(v).sum().backward()
    assert torch.allclose(fc.weight.grad, torch.ones(2, 1) * v.sum(0))
    with pytest.raises(UsageError, match="float weights must be one of"):
        set_float_weights(model, "bfloat16")
