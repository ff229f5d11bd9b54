"""The registry and the paper's zoo: exact counts from shared/reference/zoo.md."""

import pytest
import torch

from bnncli.errors import UsageError
from bnncli.models import IMAGENET_MODELS, count_model, create_model, list_models, model_options, register_model
from bnncli.models.binarydensenet import transition_channels
from bnncli.nn import BinaryConv2d

# zoo.md, "Exact counts (ImageNet head, 1000 classes, 224x224 input)".
ZOO = {
    "binarydensenet28": (5_131_496, 5_150_504, 4_202_496, 3_587_383_296, 202_484_224, 4_241_312),
    "binarydensenet37": (8_702_248, 8_734_120, 7_593_984, 4_506_808_320, 199_738_368, 5_382_304),
    "binarydensenet37_dilated": (8_702_248, 8_734_120, 7_593_984, 7_774_470_144, 452_625_408, 5_382_304),
    "binarydensenet45": (13_889_512, 13_939_240, 12_349_440, 6_430_556_160, 244_103_424, 7_703_968),
    "resnete18": (11_689_640, 11_699_368, 10_985_472, 1_676_279_808, 137_793_536, 4_189_856),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_counts_match_zoo_exactly(name):
    s = count_model(create_model(name), image_size=224)
    got = (s.params, s.params_with_bn_stats, s.binary_params, s.binary_macs, s.fp_macs, s.size_bytes)
    assert got == ZOO[name]


def test_ops_as_the_authors_count_them():
    assert f"{count_model(create_model('binarydensenet28')).ops:.2e}" == "2.58e+08"
    assert f"{count_model(create_model('binarydensenet37')).ops:.2e}" == "2.70e+08"


def test_transition_channels_use_python_round():
    assert [transition_channels(c, r) for c, r in [(448, 2.7), (544, 2.7), (576, 2.2)]] == [160, 192, 256]
    assert transition_channels(480, 2.0) == 256  # 240 / 32 = 7.5 rounds to 8 (half to even)


def test_resnete18_has_sixteen_binary_3x3_convs_and_fp_downsampling():
    model = create_model("resnete18")
    binary = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(binary) == 16 and all(m.kernel_size == (3, 3) for m in binary)
    assert model.features[0].conv.clip_threshold == 1.25
    assert sum(isinstance(m, BinaryConv2d) for m in create_model("resnete34").modules()) == 32


def test_binary_downsampling_ablation_binarizes_the_three_shortcuts():
    fp = count_model(create_model("resnete18"))
    binary = count_model(create_model("resnete18", binary_downsample=True))
    shortcut_weights = 64 * 128 + 128 * 256 + 256 * 512
    assert binary.params == fp.params
    assert binary.binary_params - fp.binary_params == shortcut_weights
    assert fp.fp_macs - binary.fp_macs == binary.binary_macs - fp.binary_macs == 3 * 6_422_528


def test_dilated_variant_keeps_resolution_after_stage_two():
    model = create_model("binarydensenet37_dilated").eval()
    x = torch.zeros(1, 3, 224, 224, device="meta")
    feats = model.features.to("meta")(model.stem.to("meta")(x))
    assert feats.shape[-2:] == (28, 28)
    dilations = [m.dilation[0] for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert dilations == [1] * 14 + [2] * 12 + [4] * 6


def test_birealnet18_is_the_bireal_comparison_point():
    model = create_model("birealnet18")
    conv = model.features[0].conv
    assert (conv.activation_gradient, conv.scaling) == ("approxsign", "xnor")
    assert count_model(model).params == 11_689_512  # torchvision resnet18's count: no extra stem BN


def test_options_reach_every_binary_conv():
    model = create_model("binarydensenet28", clip_threshold=1.0, pad_value=-1, scaling="xnor",
                         activation_gradient="approxsign", weight_gradient="bmxnet")
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs) == 23
    assert {(c.clip_threshold, c.pad_value, c.scaling, c.activation_gradient, c.weight_gradient) for c in convs} == {
        (1.0, -1.0, "xnor", "approxsign", "bmxnet")}
    assert model.bnn_kwargs["pad_value"] == -1 and model.bnn_arch == "binarydensenet28"


def test_registry_lists_the_zoo_and_small_variants():
    names = list_models()
    assert set(IMAGENET_MODELS) <= set(names)
    assert {"binarydensenet_tiny", "resnete_tiny", "birealnet_tiny"} <= set(names)
    assert list_models("resnete*") == [n for n in names if n.startswith("resnete")]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UsageError, match="did you mean binarydensenet28"):
        create_model("binarydensenet82")
    with pytest.raises(UsageError, match="unknown model"):
        create_model("zzz")


def test_unknown_option_and_none_values():
    with pytest.raises(UsageError, match="no option depth"):
        create_model("resnete18", depth=50)
    with pytest.raises(UsageError, match="no option binary_downsample"):
        create_model("binarydensenet28", binary_downsample=True)
    model = create_model("resnete18", clip_threshold=None, num_classes=None)
    assert model.bnn_kwargs["clip_threshold"] == 1.25 and model.fc.out_features == 1000
    assert model_options("resnete18")["clip_threshold"] == 1.25


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="registered twice"):
        @register_model("resnete")
        def resnete18():  # noqa: F811
            raise AssertionError


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_on_small_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, thumbnail=True, in_channels=3)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [m.weight.grad for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert grads and all(g is not None for g in grads)


def test_grayscale_input_and_bad_common_options():
    assert create_model("resnete_tiny", in_channels=1)(torch.randn(1, 1, 16, 16)).shape == (1, 10)
    with pytest.raises(UsageError):
        create_model("resnete_tiny", num_classes=0)


@pytest.mark.parametrize("name", ["binarydensenet_tiny", "resnete_tiny", "birealnet_tiny"])
def test_float_weights_option_reaches_every_full_precision_layer(name):
    from bnncli.nn import FloatConv2d, FloatLinear, is_float_layer

    default = create_model(name)
    assert default.bnn_kwargs["float_weights"] == "float16" and model_options(name)["float_weights"] == "float16"
    floats = [m for m in default.modules() if is_float_layer(m)]
    # Every nn.Conv2d / nn.Linear of a registry model is a float layer that follows the option.
    plain = [m for m in default.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert floats and len(floats) == len(plain)
    assert all(isinstance(m, (FloatConv2d, FloatLinear)) and m.float_weights == "float16" for m in floats)
    fp32 = create_model(name, float_weights="float32")
    assert all(m.float_weights == "float32" for m in fp32.modules() if is_float_layer(m))
    with pytest.raises(UsageError, match="float weights must be one of"):
        create_model(name, float_weights="int8")


def test_checkpoints_without_float_weights_rebuild_with_float32_layers():
    """Checkpoints written before the option existed were trained with plain float32 layers."""
    from bnncli.artifacts.checkpoint import build_model
    from bnncli.nn import is_float_layer

    model = create_model("resnete_tiny", float_weights="float32")
    kwargs = {k: v for k, v in model.bnn_kwargs.items() if k != "float_weights"}
    ckpt = {"arch": "resnete_tiny", "arch_kwargs": kwargs, "model": model.state_dict()}
    rebuilt = build_model(ckpt)
    assert all(m.float_weights == "float32" for m in rebuilt.modules() if is_float_layer(m))
    ckpt["arch_kwargs"] = {**kwargs, "float_weights": "float16"}
    assert all(m.float_weights == "float16" for m in build_model(ckpt).modules() if is_float_layer(m))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("image_size", [32, 224])
def test_layer_summary_adds_up_to_the_model_counts(name, image_size):
    from bnncli.models import count_model, layer_summary

    model = create_model(name, num_classes=10, thumbnail=image_size < 50)
    rows = layer_summary(model, image_size)
    totals = count_model(model, image_size)
    assert sum(r.binary_macs for r in rows) == totals.binary_macs
    assert sum(r.fp_macs for r in rows) == totals.fp_macs
    assert sum(r.params for r in rows) == totals.params
    assert sum(r.size_bytes for r in rows) == pytest.approx(totals.size_bytes, abs=1)
    # BinaryAlexNet's first dense layer is a BinaryConv2d subclass (bnncli.models.alexnet).
    assert {r.type for r in rows if r.kind == "binary"} - {"FlattenedBinaryConv2d"} == {"BinaryConv2d"}
    assert all(r.binary_macs == 0 for r in rows if r.kind != "binary")
    assert rows[-1].output_shape == (10,) and rows[0].output_shape[1] <= image_size
    assert not any(".input_quantizer" in r.name or "quantizer" in r.type.lower() for r in rows)


def test_models_layers_cli(capsys):
    import json

    from bnncli.cli.app import main

    assert main(["models", "resnete18", "--layers", "--image-size", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    layers, totals = report["layers"], report["totals"]
    assert report["name"] == "resnete18" and report["image_size"] == 64
    assert sum(r["binary_macs"] for r in layers) == totals["binary_macs"] > 0
    assert sum(r["params"] for r in layers) == totals["params"]
    assert [r["kind"] for r in layers if r["type"] == "BinaryConv2d"] == ["binary"] * 16
    assert main(["models", "binarydensenet_tiny", "--layers"]) == 0
    shown = capsys.readouterr().out
    assert "BinaryConv2d" in shown and "total" in shown
    assert main(["models", "resnete*", "--layers"]) == 2
    assert "--layers lists one model" in capsys.readouterr().err


def test_the_zoo_table_is_the_registry_and_its_counts():
    """bnncli.models.zoo (plain data, for `bnn models` and name checks without torch) equals the
    registry's built-in models and count_model at 224 px and 1000 classes. When a model changes,
    regenerate the table from the rows this test prints."""
    from bnncli.models import builtin_model, count_model, create_model, list_models, model_family
    from bnncli.models.zoo import IMAGE_SIZE, NUM_CLASSES, ZOO

    rows = []
    for name in (n for n in list_models() if builtin_model(n)):
        s = count_model(create_model(name, num_classes=NUM_CLASSES, thumbnail=False, in_channels=3), IMAGE_SIZE)
        rows.append(f'    "{name}": ZooCounts("{model_family(name)}", {s.params}, {s.params_with_bn_stats}, '
                    f'{s.binary_params}, {s.binary_macs}, {s.fp_macs}, {s.fc_macs}),')
        entry = ZOO.get(name)
        assert entry is not None and (entry.family, entry.params, entry.params_with_bn_stats, entry.binary_params,
                                      entry.binary_macs, entry.fp_macs, entry.fc_macs) == (
            model_family(name), s.params, s.params_with_bn_stats, s.binary_params, s.binary_macs, s.fp_macs,
            s.fc_macs), "\n".join(rows)
        assert (entry.ops, entry.size_bytes) == (s.ops, s.size_bytes)
    assert list(ZOO) == [n for n in list_models() if builtin_model(n)]


# Larq Zoo 2.4's models as larq-zoo builds them (weights=None, 224 px, 1000 classes), counted with
# TF: trainable weights, all weights (BatchNorm statistics and QuickNet's fixed blur-pool kernels
# included), and larq.models.ModelProfile's binary (1-bit) and 32-bit MACs (the classifier included).
LARQ_ZOO = {
    "quicknet_small": (12_652_504, 12_664_344, 1_156_055_040, 15_941_120),
    "quicknet": (13_230_024, 13_243_720, 1_849_688_064, 29_651_712),
    "quicknet_large": (23_338_184, 23_359_304, 3_699_376_128, 29_651_712),
    "birealnet_larq": (11_689_512, 11_699_112, 1_676_279_808, 137_793_536),
    "meliusnet22": (6_944_584, 6_969_672, 4_624_220_160, 136_388_608),
    "realtobinarynet": (11_986_920, 11_995_624, 1_676_279_808, 138_087_936),
    "xnornet": (62_377_440, 62_396_768, 1_025_744_896, 113_379_328),
    "binary_alexnet": (61_838_248, 61_859_192, 768_512_000, 72_855_552),
}
# The "Parameters" of larq-zoo's docstrings. BiRealNet's and RealToBinaryNet's are all their weights, MeliusNet22's the
# trainable ones; QuickNet's are ModelProfile's count, which leaves out the statistics of every
# BatchNorm with a scale and centre: the trainable weights, the blur kernels and the stem's
# depthwise BatchNorm's two statistics.
LARQ_ZOO_DOCSTRING_PARAMS = {"quicknet_small": 12_655_688, "quicknet": 13_234_088, "quicknet_large": 23_342_248,
                             "birealnet_larq": 11_699_112, "meliusnet22": 6_944_584, "realtobinarynet": 11_995_624,
                             "xnornet": 62_396_768, "binary_alexnet": 61_859_192}


@pytest.mark.parametrize("name", sorted(LARQ_ZOO))
def test_larq_zoo_models_count_what_larq_zoo_builds(name):
    model = create_model(name)
    s = count_model(model, image_size=224)
    fixed = sum(p.numel() for p in model.parameters() if not p.requires_grad)  # QuickNet's blur pools
    assert (s.params, s.params_with_bn_stats + fixed, s.binary_macs, s.fp_macs) == LARQ_ZOO[name]
    if name.startswith("quicknet"):
        depthwise_bn_stats = 2 * model.stem.depthwise_bn.num_features
        assert s.params + fixed + depthwise_bn_stats == LARQ_ZOO_DOCSTRING_PARAMS[name]
    elif name == "meliusnet22":  # its docstring counts the trainable weights
        assert s.params == LARQ_ZOO_DOCSTRING_PARAMS[name]
    else:  # Bi-Real Net, XNOR-Net and BinaryAlexNet: all weights
        assert s.params_with_bn_stats == LARQ_ZOO_DOCSTRING_PARAMS[name]
        assert s.params_with_bn_stats == LARQ_ZOO_DOCSTRING_PARAMS[name]


def test_quicknet_blocks_are_larq_zoos():
    from bnncli.models.quicknet import BlurPool2d, ResidualBlock, Transition

    model = create_model("quicknet")
    blocks = [m for m in model.features if isinstance(m, ResidualBlock)]
    assert len(blocks) == 16 and len([m for m in model.features if isinstance(m, Transition)]) == 3
    convs = [b.conv for b in blocks]
    assert {(c.pad_value, c.clip_threshold, c.weight_gradient, c.scaling, c.kernel_size) for c in convs} == {
        (1.0, 1.25, "larq", "none", (3, 3))}
    blur = next(m for m in model.modules() if isinstance(m, BlurPool2d))
    assert not blur.weight.requires_grad and blur.stride == (2, 2) and blur.groups == blur.in_channels
    assert torch.equal(blur.weight[0, 0] * 16, torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))
    assert model.stem.depthwise.groups == 16 and model.stem.depthwise_bn.weight is None
    assert model.stem.bn.eps == 1e-3 and blocks[0].bn.eps == 1e-5
    # 224 px -> 56 after the stem, then 28, 14, 7 through transitions of max pool 2x2 stride 1 and blur stride 2.
    assert count_model(model).binary_macs == sum(
        64 * 64 * 9 * 56 * 56 * (c == 64) + 128 * 128 * 9 * 28 * 28 * (c == 128) + 256 * 256 * 9 * 14 * 14 * (c == 256)
        + 512 * 512 * 9 * 7 * 7 * (c == 512) for c in (b.conv.in_channels for b in blocks))


def test_birealnet_larq_differs_from_birealnet18_only_in_larq_zoos_choices():
    ours, larq = create_model("birealnet18"), create_model("birealnet_larq")
    nn = torch.nn
    layers = (BinaryConv2d, nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d)
    assert [(n, type(m)) for n, m in ours.named_modules() if isinstance(m, layers)] == \
        [(n, type(m)) for n, m in larq.named_modules() if isinstance(m, layers)]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in larq.state_dict().items()}
    bns = [m for m in larq.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in bns} == {(1e-3, 0.2)}
    convs = [m for m in larq.modules() if isinstance(m, BinaryConv2d)]
    assert {(c.clip_threshold, c.weight_gradient, c.scaling, c.activation_gradient) for c in convs} == {
        (1.0, "larq", "xnor", "approxsign")}


def test_meliusnet_improvement_block_adds_onto_the_last_channels():
    from bnncli.models.common import BinaryOptions
    from bnncli.models.meliusnet import DenseBlock, ImprovementBlock

    model = create_model("meliusnet22")
    blocks = list(model.features)
    assert sum(isinstance(b, DenseBlock) for b in blocks) == 17 == sum(isinstance(b, ImprovementBlock) for b in blocks)
    assert model.stem.conv1.groups == 4 and model.stem.conv2.groups == 8 and model.num_features == 512
    block = ImprovementBlock(8, 4, BinaryOptions()).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        w = block.conv(block.bn(x))
        y = block(x)
    assert torch.equal(y[:, :4], x[:, :4]) and torch.equal(y[:, 4:], x[:, 4:] + w)


def test_realtobinarynet_scales_each_binary_conv_per_image():
    from bnncli.models.realtobinarynet import HalfBlock

    model = create_model("realtobinarynet")
    blocks = [m for m in model.features if isinstance(m, HalfBlock)]
    assert len(blocks) == 16 and model.num_features == 512
    assert [(b.conv.in_channels, b.conv.out_channels, b.conv.stride[0]) for b in blocks if b.conv.stride[0] == 2] == \
        [(64, 128, 2), (128, 256, 2), (256, 512, 2)]
    assert {(b.conv.clip_threshold, b.conv.pad_value, b.conv.scaling, b.conv.weight_gradient) for b in blocks} == {
        (1.0, 0.0, "none", "larq")}
    scaling = [(b.scaling.reduce.out_features, b.scaling.expand.out_features) for b in blocks[4:6]]
    assert scaling == [(8, 128), (16, 128)]  # Larq Zoo's block 4a (64 -> 128) and 4b (128 -> 128)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in bns} == {(1e-3, 0.01)}
    block = blocks[1].eval()
    x = torch.randn(2, 64, 5, 5)
    with torch.no_grad():
        a = block.bn(x)
        s = torch.sigmoid(block.scaling.expand(torch.relu(block.scaling.reduce(a.mean((2, 3))))))
        y = block.conv(a) * s[:, :, None, None]
        expected = torch.where(y >= 0, y, y * block.prelu.weight[None, :, None, None]) + x
        assert torch.allclose(block(x), expected, atol=1e-5)
        assert not torch.allclose(block(x[:1]), block(x[1:])), "each image gets its own scales"


# larq.models.summary of larq-zoo 2.4's XNORNet and BinaryAlexNet (weights=None, 224 px): 1-bit weights
# (BinaryAlexNet's first conv, binary weights on the float image, among them but its MACs 32-bit).
LARQ_ZOO_BINARY_WEIGHTS = {"xnornet": 58_236_928, "binary_alexnet": 61_827_776}


def test_xnornet_and_binary_alexnet_are_larq_zoos():
    from bnncli.models.alexnet import FlattenedBinaryConv2d
    from bnncli.nn import UnscaledBatchNorm2d

    for name, binary_weights in LARQ_ZOO_BINARY_WEIGHTS.items():
        model = create_model(name)
        assert count_model(model).binary_params == binary_weights
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(bns) == 8 and all(isinstance(m, UnscaledBatchNorm2d) and m.weight is None for m in bns)
        convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
        assert {(c.clip_threshold, c.weight_gradient, c.pad_value) for c in convs} == {(1.0, "larq", 0.0)}
    xnor = create_model("xnornet")
    assert [m.eps for m in xnor.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [1e-5] + [1e-4] * 6 + [1e-3]
    assert {c.scaling for c in xnor.modules() if isinstance(c, BinaryConv2d)} == {"xnor"}
    assert xnor.fc6.kernel_size == (6, 6) and xnor.fc.bias is None and xnor.conv1.stride == (4, 4)
    alex = create_model("binary_alexnet")
    assert not alex.conv1.binary_input and alex.conv1.kernel_size == (11, 11) and alex.conv2.binary_input
    assert isinstance(alex.fc6, FlattenedBinaryConv2d) and alex.fc6.kernel_size == (6, 6)
    assert {m.eps for m in alex.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert alex.bn8.num_features == 1000  # the logits are the last BatchNorm's output
    # 224 px leaves a 6x6 map for the classifier's first layer, so a 1x1 map after it.
    feats = []
    hook = alex.fc6.register_forward_hook(lambda m, i, o: feats.append((i[0].shape[-2:], o.shape[-2:])))
    with torch.no_grad():
        alex.eval().to("meta")(torch.empty(1, 3, 224, 224, device="meta"))
    hook.remove()
    assert feats == [((6, 6), (1, 1))]


def test_xnor_scaling_is_the_mean_magnitude_per_output_channel():
    model = create_model("xnornet_tiny")
    conv = model.conv2
    with torch.no_grad():
        conv.weight.uniform_(-1, 1)
        x = torch.randn(1, conv.in_channels, 7, 7)
        alpha = conv.weight.abs().mean(dim=(1, 2, 3))
        plain = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0), torch.where(conv.weight >= 0, 1.0, -1.0),
                                           padding=2)
        torch.testing.assert_close(conv(x), plain * alpha.view(1, -1, 1, 1))


def test_a_binary_conv_on_float_input_takes_the_float_map_and_pads_it_with_zero():
    conv = BinaryConv2d(3, 4, 3, padding=1, binary_input=False)
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x, torch.where(conv.weight >= 0, 1.0, -1.0), padding=1)
        torch.testing.assert_close(conv(x), expected)
    with pytest.raises(UsageError, match="binary conv on float input pads with 0"):
        BinaryConv2d(3, 4, 3, padding=1, binary_input=False, pad_value=-1)
    s = count_model(torch.nn.Sequential(conv), image_size=5)
    assert (s.binary_params, s.binary_macs, s.fp_macs) == (108, 0, 4 * 25 * 27)


def test_an_input_size_a_model_cannot_take_is_one_message(capsys):
    """XNOR-Net's classifier reads the 6x6 map left at 217-248 px; below, its layers do not fit. So
    does ResNetE at 100 px (a residual's branches differ in size). bnn models names them."""
    from bnncli.cli.app import main
    from bnncli.models import check_image_size

    with pytest.raises(UsageError, match="xnornet cannot take 216x216 inputs"):
        check_image_size(create_model("xnornet"), 216)
    check_image_size(create_model("xnornet"), 217)
    check_image_size(create_model("xnornet_tiny", thumbnail=False), 57)
    with pytest.raises(UsageError, match="xnornet_tiny cannot take 56x56 inputs"):
        check_image_size(create_model("xnornet_tiny", thumbnail=False), 56)
    assert main(["models", "--image-size", "100"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "Left out, their layers do not fit 100 px inputs: resnete18," in shown and "binary_alexnet." in shown
    assert main(["models", "binary_alexnet", "--image-size", "100"]) == 2
    err = capsys.readouterr().err
    assert "binary_alexnet cannot take 100x100 inputs" in err and len(err.strip().splitlines()) == 1
