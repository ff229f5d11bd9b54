"""TensorFlow's "same" padding: the rule, the PyTorch layers, and every backend carrying it exactly."""

import struct

import numpy as np
import pytest
import torch
from conftest import exact_inputs, make_exact, randomize_batchnorm, rewrite_packed_header

from bnncli import create_model
from bnncli.artifacts.onnx_file import ort_session
from bnncli.data.presets import preprocessing
from bnncli.deploy.lowering import lower
from bnncli.deploy.onnx_export import to_onnx
from bnncli.deploy.pack import packed_graph
from bnncli.errors import ArtifactError, UsageError
from bnncli.graph import format
from bnncli.graph.padding import resolve, same_pads
from bnncli.nn import BinaryConv2d, FloatConv2d, MaxPool2d, set_padding
from bnncli.runtime import Model


@pytest.mark.parametrize("size,kernel,stride,dilation,expected", [
    (224, 7, 2, 1, (2, 3)),  # the ImageNet stem conv: 2 above, 3 below
    (112, 3, 2, 1, (0, 1)),  # the stem max pool
    (56, 3, 2, 1, (0, 1)),  # a ResNetE stride-2 binary conv
    (225, 7, 2, 1, (3, 3)),  # odd sizes split evenly here
    (57, 3, 2, 1, (1, 1)),
    (32, 3, 1, 1, (1, 1)),  # stride 1, odd kernel: symmetric, as PyTorch
    (32, 3, 1, 4, (4, 4)),  # dilated
    (8, 2, 2, 1, (0, 0)),
    (7, 2, 2, 1, (0, 1)),
    (5, 1, 2, 1, (0, 0)),
])
def test_same_pads_follow_tensorflow(size, kernel, stride, dilation, expected):
    assert same_pads(size, kernel, stride, dilation) == expected
    before, after = expected
    # TensorFlow's output size: ceil(size / stride).
    assert (size + before + after - dilation * (kernel - 1) - 1) // stride + 1 == -(-size // stride)


def test_resolve_gives_top_left_bottom_right():
    assert resolve("same", (224, 225), (7, 7), (2, 2)) == (2, 3, 3, 3)
    assert resolve([3, 1], (224, 224), (7, 3), (2, 1)) == (3, 1, 3, 1)


def _center_tap(layer) -> None:
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:, :, 1, 1] = 1.0


def test_pytorch_layers_read_the_pixels_tensorflow_reads():
    # With TensorFlow's rule an 8-pixel axis pads 0 before and 1 after, so the centre tap of a
    # 3x3 stride-2 window lands on odd pixels; with symmetric padding 1 on even ones.
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    conv = FloatConv2d(1, 1, 3, 2, 1, bias=False)
    conv.float_weights = "float32"
    _center_tap(conv)
    assert torch.equal(conv(x), x[:, :, ::2, ::2])
    conv.padding_rule = "tensorflow"
    assert torch.equal(conv(x), x[:, :, 1::2, 1::2])
    pool = MaxPool2d(3, 2, 1)
    assert torch.equal(pool(x), torch.nn.MaxPool2d(3, 2, 1)(x))
    pool.padding_rule = "tensorflow"
    # Windows [2j, 2j + 2]: the max of an increasing map is the last in-range pixel.
    expected = x[:, :, [2, 4, 6, 7]][:, :, :, [2, 4, 6, 7]]
    assert torch.equal(pool(x), expected)


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
def test_binary_conv_pads_with_its_pad_value_after_the_tensorflow_split(pad_value):
    conv = BinaryConv2d(1, 1, 3, stride=2, padding=1, pad_value=pad_value)
    with torch.no_grad():
        conv.weight.fill_(1.0)  # each output: the sum of its 3x3 window of +-1 values
    conv.padding_rule = "tensorflow"
    x = torch.ones(1, 1, 8, 8)
    y = conv(x)[0, 0]
    # Rows and columns 0..6 see 9 real pixels; the last output row/column reads one padded row/column.
    assert y.shape == (4, 4) and y[0, 0] == 9
    assert y[3, 0] == 6 + 3 * pad_value and y[3, 3] == 4 + 5 * pad_value


def test_set_padding_switches_only_padded_stride_2_layers():
    model = create_model("resnete18", padding="tensorflow")
    switched = {name for name, m in model.named_modules() if getattr(m, "padding_rule", None) == "tensorflow"}
    assert switched == {"stem.0", "stem.3", "features.4.conv", "features.8.conv", "features.12.conv"}
    dense = create_model("binarydensenet28", padding="tensorflow")
    assert {n for n, m in dense.named_modules() if getattr(m, "padding_rule", None) == "tensorflow"} == \
        {"stem.0", "stem.3"}
    assert model.bnn_kwargs["padding"] == "tensorflow"
    assert create_model("resnete_tiny").bnn_kwargs["padding"] == "symmetric"
    with pytest.raises(UsageError, match="padding must be one of symmetric, tensorflow"):
        set_padding(model, "same")


def _model(name: str, padding: str, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(name, thumbnail=False, num_classes=10, padding=padding, float_weights="float32").eval()
    randomize_batchnorm(model, seed)
    make_exact(model, seed=seed + 1)
    return model


def _meta(model, size: int):
    return {"arch": model.bnn_arch, "arch_kwargs": model.bnn_kwargs, "class_names": [f"c{i}" for i in range(10)],
            "preprocessing": preprocessing("small", size), "float_dtype": "float32", "producer": "test"}


@pytest.mark.parametrize("name,sizes", [
    ("binarydensenet_tiny", (32, 35)), ("binarydensenet_tiny_dilated", (32, 30)), ("resnete_tiny", (32, 64)),
    ("birealnet_tiny", (32, 64)),
])
def test_every_backend_pads_like_pytorch_at_every_input_size(name, sizes):
    """On exact weights (conftest.make_exact) every binarization in the packed runtime and
    onnxruntime equals PyTorch's, so the logits agree to the rounding of the last float layers;
    the rule is resolved per input size in the runtime and at the export size in ONNX."""
    model = _model(name, "tensorflow")
    graph = lower(model)
    assert sum(n.attrs.get("padding") == "same" for n in graph.nodes) >= 2
    for size in sizes:
        x = exact_inputs(3, size=size, seed=size)
        with torch.no_grad():
            expected = model(x).numpy()
            symmetric = _model(name, "symmetric")(x).numpy()
        assert not np.array_equal(expected, symmetric)  # the rule changes what the model computes
        data = format.encode(packed_graph(graph), _meta(model, size))
        assert struct.unpack_from("<I", data, 8)[0] == 2
        decoded, meta = format.decode(data)
        assert meta["format_version"] == 2
        onnx_out = ort_session(to_onnx(graph, _meta(model, size))).run(None, {"input": x.numpy()})[0]
        for got in (Model(decoded, meta, threads=2)(x.numpy()), Model(graph, threads=1)(x.numpy()), onnx_out):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_uneven_pads_are_explicit_in_onnx():
    model = _model("resnete_tiny", "tensorflow")
    onnx_model = to_onnx(lower(model), _meta(model, 32))
    pads = {n.name: list(next(a.ints for a in n.attribute if a.name == "pads"))
            for n in onnx_model.graph.node if n.op_type in ("Conv", "MaxPool")}
    assert pads["stem_0"] == [2, 2, 3, 3] and pads["stem_3"] == [0, 0, 1, 1]
    assert pads["features_2_conv"] == [0, 0, 1, 1] and pads["features_1_conv"] == [1, 1, 1, 1]  # 8x8: s2, s1


def test_a_version_1_file_cannot_claim_same_padding():
    model = _model("resnete_tiny", "tensorflow")
    data = format.encode(packed_graph(lower(model)), _meta(model, 32))
    # Version 1 in the preamble and the header, re-sealed, so only the padding is at fault.
    sealed = rewrite_packed_header(data, lambda h: h.update(format_version=1), version=1)
    with pytest.raises(ArtifactError, match='padding "same" needs format version 2'):
        format.decode(sealed)
