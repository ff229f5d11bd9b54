"""Binarization for fast training: the same values and gradients as the plain formulation, whole
graphs under torch.compile, and the latent-weight clamp without a walk over the modules."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from bnncli.models import create_model
from bnncli.nn import BinaryConv2d, LatentWeightClamp, approx_sign, binary_sign, clamp_latent_weights, ste_sign

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
THRESHOLDS = (1.0, 1.25, 1.3)


def _plain_sign(x):
    """The formulation every other one must equal: one ``where`` on ``x >= 0``."""
    one = x.new_ones(())
    return torch.where(x >= 0, one, -one)


def _edge_values(dtype, threshold):
    """Random values and the ones a sign or a clip decides on: zeros of both signs, +-t and the
    neighbouring floats of the dtype, infinities."""
    t = torch.tensor(threshold, dtype=dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    edges = [0.0, -0.0, t, -t, torch.nextafter(t, inf), torch.nextafter(t, -inf), -torch.nextafter(t, inf),
             -torch.nextafter(t, -inf), math.inf, -math.inf, 1e-30, -1e-30]
    edges = torch.stack([torch.as_tensor(v, dtype=dtype) for v in edges])
    torch.manual_seed(0)
    return torch.cat([edges, (torch.randn(4000) * 1.5).to(dtype), torch.zeros(50, dtype=dtype)])


class _PlainSte(torch.autograd.Function):
    """The reference straight-through sign: gradient times (|x| <= t)."""

    @staticmethod
    def forward(ctx, x, threshold):
        ctx.save_for_backward(x)
        ctx.threshold = threshold
        return _plain_sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.threshold), None


class _PlainApprox(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _plain_sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_sign_equals_the_plain_formulation(dtype):
    x = torch.cat([_edge_values(dtype, 1.3), torch.tensor([math.nan, -math.nan], dtype=dtype)])
    y = binary_sign(x)
    assert y.dtype == dtype
    assert torch.equal(y, _plain_sign(x))
    assert set(y.tolist()) == {-1.0, 1.0}
    assert y[1].item() == 1.0 and y[-2:].tolist() == [-1.0, -1.0]  # -0.0 -> +1, NaN -> -1
    assert binary_sign(x[::3]).tolist() == _plain_sign(x[::3]).tolist()  # strided input


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("threshold", (*THRESHOLDS, math.inf))
def test_ste_sign_forward_and_gradient_equal_the_reference(dtype, threshold):
    x = _edge_values(dtype, 1.3 if threshold == math.inf else threshold)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ya, yb = ste_sign(a, threshold), _PlainSte.apply(b, threshold)
    assert torch.equal(ya, yb)
    ya.backward(upstream)
    yb.backward(upstream)
    assert torch.equal(a.grad, b.grad)
    if threshold != math.inf:  # the clip threshold itself still passes the gradient
        inside = x.abs() <= threshold
        assert torch.equal(a.grad != 0, inside & (upstream != 0))


def test_approx_sign_forward_and_gradient_equal_the_reference():
    x = _edge_values(torch.float32, 1.0)
    upstream = torch.randn(x.shape)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = approx_sign(a), _PlainApprox.apply(b)
    assert torch.equal(ya, yb)
    ya.backward(upstream)
    yb.backward(upstream)
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("activation_gradient,weight_gradient,scaling",
                         list(itertools.product(("ste", "approxsign"), ("larq", "bmxnet"), ("none", "xnor"))))
@pytest.mark.parametrize("pad_value", (0.0, -1.0))
def test_binary_conv_outputs_and_gradients_equal_the_reference(activation_gradient, weight_gradient, scaling,
                                                               pad_value):
    torch.manual_seed(0)
    t = 1.3
    layer = BinaryConv2d(6, 5, 3, padding=1, pad_value=pad_value, clip_threshold=t,
                         activation_gradient=activation_gradient, weight_gradient=weight_gradient, scaling=scaling)
    with torch.no_grad():
        layer.weight.mul_(8.0)  # many latent weights beyond the clip threshold
        layer.weight[0, 0, 0] = torch.tensor([0.0, t, -t])
    x = torch.randn(2, 6, 7, 7) * 1.5
    x[0, 0, 0, :4] = torch.tensor([0.0, -0.0, t, -t])
    x.requires_grad_()
    y = layer(x)
    upstream = torch.randn(y.shape)
    y.backward(upstream)

    w = layer.weight.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    xb = _PlainApprox.apply(xr) if activation_gradient == "approxsign" else _PlainSte.apply(xr, t)
    wb = _PlainSte.apply(w, t if weight_gradient == "larq" else math.inf)
    ref = F.conv2d(F.pad(xb, (1, 1, 1, 1), value=pad_value), wb)
    if scaling == "xnor":
        ref = ref * w.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
    ref.backward(upstream)
    assert torch.equal(y, ref)
    assert torch.equal(x.grad, xr.grad)
    assert torch.equal(layer.weight.grad, w.grad)


def _clamp_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        BinaryConv2d(3, 4, 3, clip_threshold=1.3),
        BinaryConv2d(4, 4, 3, clip_threshold=1.0),
        BinaryConv2d(4, 4, 3, clip_threshold=1.3, weight_gradient="bmxnet"),
        torch.nn.Sequential(BinaryConv2d(4, 2, 1, clip_threshold=1.3), torch.nn.Conv2d(2, 2, 1)),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 2)
        model[0].weight[0, 0, 0] = torch.tensor([math.nan, -0.0, 1.3])
    return model


def test_latent_weight_clamp_equals_a_clamp_per_layer():
    model, reference = _clamp_model(), _clamp_model()
    clamp = LatentWeightClamp(model)
    assert len(clamp) == 3 and sorted(t for t, _ in clamp.groups) == [1.0, 1.3]
    model.modules = model.named_modules = None  # calling it must not walk the modules again
    clamp()
    del model.modules, model.named_modules
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, BinaryConv2d) and m.weight_gradient == "larq":
                m.weight.clamp_(-m.clip_threshold, m.clip_threshold)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.isnan(), q.isnan()) and torch.equal(p.nan_to_num(), q.nan_to_num()), name
        assert torch.equal(p.signbit(), q.signbit()), name
    assert model[0].weight.isnan().sum() == 1 and model[0].weight.abs().nan_to_num().max() == 1.3
    assert model[2].weight.abs().max() > 1.3  # the BMXNet variant is not clamped
    assert model[3][1].weight.abs().max() > 1.3  # nor is a float conv


def test_latent_weight_clamp_follows_the_parameters_after_load_state_dict():
    model, other = _clamp_model(), _clamp_model()
    clamp = LatentWeightClamp(model)
    with torch.no_grad():
        other[0].weight.mul_(3)
    model.load_state_dict(other.state_dict())
    clamp()
    clamp_latent_weights(other)
    assert torch.equal(model[0].weight.nan_to_num(), other[0].weight.nan_to_num())
    assert model[0].weight.abs().nan_to_num().max() == 1.3


# ---- torch.compile: whole graphs, no breaks ------------------------------------------------------------------

OPTIONS = list(itertools.product(("ste", "approxsign"), ("larq", "bmxnet"), ("none", "xnor")))
# Every option value on every model (each model traced twice); every combination on the layer.
ABLATION = {"activation_gradient": "approxsign", "weight_gradient": "bmxnet", "scaling": "xnor", "pad_value": -1.0}


def _dynamo():
    dynamo = pytest.importorskip("torch._dynamo")
    if not hasattr(dynamo, "explain"):
        pytest.skip("torch._dynamo.explain is not available")
    return dynamo


def _explain(module, x):
    dynamo = _dynamo()
    dynamo.reset()
    try:
        return dynamo.explain(module)(x)
    finally:
        dynamo.reset()


def _assert_one_graph(e):
    assert e.graph_count == 1 and e.graph_break_count == 0, [str(b.reason) for b in e.break_reasons]
    assert not e.break_reasons


@pytest.mark.parametrize("activation_gradient,weight_gradient,scaling", OPTIONS)
@pytest.mark.parametrize("pad_value,padding_rule", [(0.0, "symmetric"), (-1.0, "symmetric"), (1.0, "tensorflow")])
def test_binary_conv_traces_as_one_graph(activation_gradient, weight_gradient, scaling, pad_value, padding_rule):
    torch.manual_seed(0)
    layer = BinaryConv2d(4, 6, 3, stride=2, padding=1, pad_value=pad_value, activation_gradient=activation_gradient,
                         weight_gradient=weight_gradient, scaling=scaling)
    layer.padding_rule = padding_rule
    block = torch.nn.Sequential(torch.nn.BatchNorm2d(4), layer)
    _assert_one_graph(_explain(block, torch.randn(2, 4, 9, 9)))


TINY = ("binarydensenet_tiny", "resnete_tiny", "birealnet_tiny")


@pytest.mark.parametrize("arch,size,options", [
    *[(arch, 32, options) for arch in TINY for options in ({}, ABLATION)],
    ("binarydensenet28", 64, {}),  # ImageNet models (with the full stem) at a small input
    ("resnete18", 64, {**ABLATION, "padding": "tensorflow", "float_weights": "float32"}),
], ids=lambda v: v if isinstance(v, str) else ("ablation" if v else "paper") if isinstance(v, dict) else None)
def test_models_trace_as_one_graph(arch, size, options):
    _dynamo()
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, thumbnail=size < 50, **options)
    model.train()
    _assert_one_graph(_explain(model, torch.randn(2, 3, size, size)))
