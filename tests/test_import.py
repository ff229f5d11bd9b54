"""`bnn import larq`: Larq Zoo Keras weights, checked against Keras' own outputs in every backend.

The fixtures (tests/fixtures/larq) were made with the real larq and larq-zoo (random weights,
non-trivial BatchNorms; regenerate with the command in tests/fixtures/larq/make_fixtures.py).
TensorFlow is not needed here: the Keras logits are stored next to the weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bnncli.artifacts.checkpoint import load_checkpoint, load_model
from bnncli.cli.app import main
from bnncli.convert import keras_h5
from bnncli.convert.larq import convert, keras_order
from bnncli.data.presets import preprocessing
from bnncli.deploy.verification import compare
from bnncli.errors import ArtifactError, UsageError
from bnncli.images.labels import imagenet_names
from bnncli.images.preprocess import larq_crop_box, preprocess_image
from bnncli.runtime import load as load_packed
from bnncli.runtime.backends import available as available_backends

h5py = pytest.importorskip("h5py")

FIXTURES = Path(__file__).parent / "fixtures" / "larq"
INFO = json.loads((FIXTURES / "fixtures.json").read_text())["fixtures"]
RESNETE = ["resnete_tiny"]
DENSENETS = ["binarydensenet_tiny", "binarydensenet_tiny_dilated"]
# QuickNet, Bi-Real Net, MeliusNet, Real-to-Binary Net
LARQ_ZOO_2 = ["quicknet_tiny", "birealnet_larq_tiny", "meliusnet_tiny", "realtobinarynet_tiny"]
# XNOR-Net and BinaryAlexNet: static-size Keras models (their classifiers read a fixed map), made at
# 64 px, 57x61 and 57 px, imported for 64 px.
ALEXNETS = ["xnornet_tiny", "binary_alexnet_tiny"]
RESIDUAL = RESNETE + LARQ_ZOO_2
STRICT = RESIDUAL + ALEXNETS  # within 1e-4 relative of Keras


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _inputs(name: str, key: str = "inputs") -> np.ndarray:
    """A fixture's inputs as float32 NCHW (Keras takes NHWC)."""
    data = np.load(FIXTURES / f"{name}.npz")
    return np.ascontiguousarray(data[key].astype(np.float32).transpose(0, 3, 1, 2))


def _keras_logits(name: str, key: str = "logits") -> np.ndarray:
    return np.load(FIXTURES / f"{name}.npz")[key]


def _check(name: str, logits: np.ndarray, keras: np.ndarray) -> None:
    """ResNetE, QuickNet, Bi-Real Net, MeliusNet, XNOR-Net, BinaryAlexNet: within 1e-4 relative of
    Keras and the same top-1. BinaryDenseNet: the same top-1 on every input (a deep dense net can
    flip a near-zero sign through float rounding)."""
    p = compare(keras, logits)
    assert p.top1_agree == p.samples, (name, p)
    if name in STRICT:
        assert p.max_rel_diff <= 1e-4, (name, p)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    """Each fixture imported through the CLI, for the fixtures' first inputs (32 px; 64 px for the
    static-size ones)."""
    out = tmp_path_factory.mktemp("imported")
    paths = {}
    for name, info in INFO.items():
        target = out / f"{name}.pt"
        code = main(["import", "larq", str(FIXTURES / info["h5"]), "--arch", name, "-o", str(target),
                     "--image-size", str(info.get("image_size", 32))])
        assert code == 0
        paths[name] = target
    return paths


@pytest.mark.parametrize("name", RESIDUAL + DENSENETS + ALEXNETS)
def test_imported_model_matches_keras_in_pytorch(name, imported):
    model, ckpt = load_model(imported[name])
    assert ckpt["arch"] == name and ckpt["arch_kwargs"]["padding"] == "tensorflow"
    assert ckpt["arch_kwargs"]["float_weights"] == "float32" and ckpt["arch_kwargs"]["thumbnail"] is False
    for key in ("inputs", "inputs_2"):  # 32x32 (64x64), and 29x61 (57x61): the padding follows each input size
        with torch.no_grad():
            logits = model(torch.from_numpy(_inputs(name, key))).numpy()
        _check(name, logits, _keras_logits(name, key.replace("inputs", "logits")))


@pytest.mark.parametrize("name", RESIDUAL + DENSENETS + ALEXNETS)
def test_imported_model_matches_keras_after_export_and_pack(name, imported, tmp_path, capsys):
    ckpt = imported[name]
    code, _, err = bnn(capsys, "export", ckpt, "-o", tmp_path / "m.onnx")
    assert code == 0, err
    code, _, err = bnn(capsys, "pack", ckpt, "-o", tmp_path / "m.bnn")
    assert code == 0, err
    from bnncli.artifacts.onnx_file import ort_session

    x = _inputs(name)
    session = ort_session(str(tmp_path / "m.onnx"))
    _check(name, session.run(None, {"input": x})[0], _keras_logits(name))
    for backend in available_backends():
        packed = load_packed(tmp_path / "m.bnn", backend=backend)
        assert packed.meta["format_version"] == 2  # "same" padding and Larq preprocessing need version 2
        _check(name, packed(x), _keras_logits(name))
        _check(name, packed(_inputs(name, "inputs_2")), _keras_logits(name, "logits_2"))  # any input size


@pytest.mark.parametrize("name", LARQ_ZOO_2 + ALEXNETS)
def test_imported_model_matches_keras_at_a_second_square_size(name, tmp_path, capsys):
    """Imported for a second square size (64 px; 57 px for XNOR-Net and BinaryAlexNet: the size an
    ONNX file is exported at), against Keras' logits at that size in PyTorch, onnxruntime and every
    packed backend; the architecture read off the file."""
    ckpt = tmp_path / "m.pt"
    size = INFO[name].get("inputs_3", [2, 64, 64])[1]
    code, out, err = bnn(capsys, "import", "larq", FIXTURES / INFO[name]["h5"], "-o", ckpt, "--image-size", size,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["arch"] == name
    x, keras = _inputs(name, "inputs_3"), _keras_logits(name, "logits_3")
    model, _ = load_model(ckpt)
    with torch.no_grad():
        _check(name, model(torch.from_numpy(x)).numpy(), keras)
    for command, target in (("export", "m.onnx"), ("pack", "m.bnn")):
        code, _, err = bnn(capsys, command, ckpt, "-o", tmp_path / target)
        assert code == 0, err
    from bnncli.artifacts.onnx_file import ort_session

    _check(name, ort_session(str(tmp_path / "m.onnx")).run(None, {"input": x})[0], keras)
    for backend in available_backends():
        _check(name, load_packed(tmp_path / "m.bnn", backend=backend)(x), keras)


def test_bireal_net_is_refused_at_sizes_where_its_shortcut_pools_would_differ(tmp_path, capsys):
    """Larq Zoo pools Bi-Real Net's shortcuts with 'same' padding: a partial window on odd maps."""
    _refused(capsys, tmp_path, FIXTURES / "birealnet_larq_tiny.h5", "at 48 px a stride-2 pool of "
             "birealnet_larq_tiny reads a 3x3 map", "--image-size", "48")
    code, _, err = bnn(capsys, "import", "larq", FIXTURES / "birealnet_larq_tiny.h5", "-o", tmp_path / "ok.pt",
                       "--image-size", "96")
    assert code == 0, err


def test_meliusnet_layers_pair_by_larq_zoos_names(tmp_path, capsys):
    """MeliusNet's Keras layers carry Larq Zoo's own names; a grouped stem conv is one Conv2D per group."""
    from bnncli.convert.larq import meliusnet_names

    model, _, result = convert(FIXTURES / "meliusnet_tiny.h5", image_size=32)
    assert result.arch == "meliusnet_tiny"
    names = meliusnet_names(model)
    groups = [f"stem_s1_groupconv_conv{g}" for g in range(4)]
    assert names[2] == ("grouped conv", "stem.conv1", model.stem.conv1, groups)
    with h5py.File(FIXTURES / "meliusnet_tiny.h5", "r") as f:  # group 2's kernel is output channels 16-23
        kernel = f["stem_s2_groupconv_conv2/stem_s2_groupconv_conv2/kernel:0"][()]
    assert np.array_equal(model.stem.conv2.weight[16:24].detach().numpy(), kernel.transpose(3, 2, 0, 1))

    def drop(f):
        _set_names(f, [n for n in _names(f) if n != "section_1_block_0_improve_binconv"])
        del f["section_1_block_0_improve_binconv"]
    _refused(capsys, tmp_path, _edit(_copy(tmp_path, "meliusnet_tiny.h5"), drop),
             "no importable model fits the file (closest: meliusnet_tiny: the file has no layer "
             "section_1_block_0_improve_binconv for meliusnet_tiny's features.4.conv)")
    _refused(capsys, tmp_path, FIXTURES / "resnete_tiny.h5", "has no layer stem_s0_conv, so it is not a Larq Zoo "
             "meliusnet_tiny", "--arch", "meliusnet_tiny")


def test_real_to_binary_net_layers_pair_by_larq_zoos_names(tmp_path, capsys, monkeypatch):
    """Real-to-Binary Net's Keras layers carry Larq Zoo's names, ``<model name>_block_<k><a|b>_...``;
    its scaling branches' dense layers have no bias, its PReLUs one slope per channel."""
    from bnncli.convert import larq

    model, _, result = convert(FIXTURES / "realtobinarynet_tiny.h5", image_size=32)
    assert result.arch == "realtobinarynet_tiny" and result.arch_kwargs["thumbnail"] is False
    assert result.params == INFO["realtobinarynet_tiny"]["params"]["trainable"]  # what larq-zoo built
    names = larq.realtobinarynet_names(model, "r2b_bnn")
    assert names[-1] == ("dense", "fc", model.fc, ["r2b_bnn_block_6_logits"])
    half = model.features[2]  # block 3a: 16 -> 32 channels, stride 2, with its shortcut
    assert [n for _, q, _, n in names if q.startswith("features.2.")] == [
        [f"r2b_bnn_block_3a_{s}"] for s in ("shortcut_conv2d", "shortcut_batch_norm", "batch_norm", "conv2d",
                                            "scaling_dense_reduce", "scaling_dense_expand", "prelu")]
    with h5py.File(FIXTURES / "realtobinarynet_tiny.h5", "r") as f:
        alpha = f["r2b_bnn_block_3a_prelu/r2b_bnn_block_3a_prelu/alpha:0"][()]
        reduce = f["r2b_bnn_block_3a_scaling_dense_reduce/r2b_bnn_block_3a_scaling_dense_reduce/kernel:0"][()]
    assert alpha.shape == (1, 1, 32) and np.array_equal(half.prelu.weight.detach().numpy(), alpha.reshape(-1))
    assert half.scaling.reduce.bias is None and np.array_equal(half.scaling.reduce.weight.detach().numpy(), reduce.T)

    def drop(f):
        _set_names(f, [n for n in _names(f) if n != "r2b_bnn_block_4b_scaling_dense_expand"])
        del f["r2b_bnn_block_4b_scaling_dense_expand"]
    _refused(capsys, tmp_path, _edit(_copy(tmp_path, "realtobinarynet_tiny.h5"), drop),
             "no importable model fits the file (closest: realtobinarynet_tiny: the file has no layer "
             "r2b_bnn_block_4b_scaling_dense_expand for realtobinarynet_tiny's features.5.scaling.expand)")
    _refused(capsys, tmp_path, FIXTURES / "realtobinarynet_tiny.h5", "names its layers as Larq Zoo's Real-to-Binary "
             "Net does, not as meliusnet_tiny's", "--arch", "meliusnet_tiny")
    _refused(capsys, tmp_path, FIXTURES / "resnete_tiny.h5", "has no layer <model name>_block_1_conv2d, so it is not "
             "a Larq Zoo realtobinarynet_tiny", "--arch", "realtobinarynet_tiny")
    # Its shortcut pools pad by TensorFlow's rule too: sizes where one reads an odd map are refused.
    _refused(capsys, tmp_path, FIXTURES / "realtobinarynet_tiny.h5", "at 48 px a stride-2 pool of "
             "realtobinarynet_tiny reads a 3x3 map", "--image-size", "48")
    # The published file is recognised by its checksum (here the fixture's, standing in for it).
    sha = hashlib.sha256((FIXTURES / "realtobinarynet_tiny.h5").read_bytes()).hexdigest()
    monkeypatch.setitem(larq.PUBLISHED, "realtobinarynet_tiny", larq.Published("R2BTiny", "r2b-v9", "x.h5", sha))
    _, _, result = convert(FIXTURES / "realtobinarynet_tiny.h5", image_size=32)
    assert result.source["published"] is True and result.source["url"].endswith("/r2b-v9/x.h5")


def test_dense_net_differences_are_reported(imported):
    """What 'the same top-1' hides: the largest difference from Keras, printed for the record."""
    for name in DENSENETS:
        model, _ = load_model(imported[name])
        with torch.no_grad():
            p = compare(_keras_logits(name), model(torch.from_numpy(_inputs(name))).numpy())
        print(f"{name}: max |diff| {p.max_abs_diff:.3g}, relative {p.max_rel_diff:.3g}, "
              f"top-1 {p.top1_agree}/{p.samples}")
        assert p.top1_agree == p.samples


def test_architecture_is_read_off_the_file_and_the_checkpoint_describes_itself(tmp_path, capsys):
    code, out, err = bnn(capsys, "import", "larq", FIXTURES / "resnete_tiny.h5", "-o", tmp_path / "r.pt", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["arch"] == "resnete_tiny" and result["params"] == INFO["resnete_tiny"]["params"]["trainable"]
    ckpt = load_checkpoint(tmp_path / "r.pt")
    assert ckpt["class_names"] == [f"class_{i}" for i in range(10)]
    assert ckpt["preprocessing"] == preprocessing("larq", 224)
    assert ckpt["preprocessing"]["interpolation"] == "tf-bicubic"
    src = ckpt["source"]
    assert src["importer"] == "larq" and src["file"] == "resnete_tiny.h5" and src["keras_version"] == "2.19.0"
    assert len(src["sha256"]) == 64 and src["published"] is False  # random weights, not Larq Zoo's file
    # The tiny dense nets have the same weights in both variants: the name decides, else --arch.
    code, _, err = bnn(capsys, "import", "larq", FIXTURES / "binarydensenet_tiny.h5", "-o", tmp_path / "d.pt")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "d.pt")["arch"] == "binarydensenet_tiny"
    anonymous = tmp_path / "weights.h5"
    shutil.copy(FIXTURES / "binarydensenet_tiny.h5", anonymous)
    code, _, err = bnn(capsys, "import", "larq", anonymous, "-o", tmp_path / "e.pt")
    assert code == 2 and "fits binarydensenet_tiny and binarydensenet_tiny_dilated" in err and "--arch" in err
    assert not (tmp_path / "e.pt").exists()


def test_only_the_published_file_itself_gets_its_url(monkeypatch):
    """A file of a published architecture with another checksum (random weights, a fine-tune) is not
    the published file: no URL or Larq Zoo model is recorded beside "published": false."""
    from bnncli.convert import larq

    published = larq.Published("BinaryResNetE18Tiny", "resnet_e-v0.1.0", "resnete_tiny.h5", "0" * 64)
    monkeypatch.setitem(larq.PUBLISHED, "resnete_tiny", published)
    _, _, result = convert(FIXTURES / "resnete_tiny.h5")
    assert result.source["published"] is False
    assert result.source["url"] is None and result.source["larq_zoo_model"] is None
    # The published file is recognised by its checksum alone, whatever its name, and described.
    sha = hashlib.sha256((FIXTURES / "resnete_tiny.h5").read_bytes()).hexdigest()
    monkeypatch.setitem(larq.PUBLISHED, "resnete_tiny", larq.Published("X", "r-v1", "x.h5", sha))
    _, _, result = convert(FIXTURES / "resnete_tiny.h5")
    assert result.arch == "resnete_tiny" and result.source["published"] is True
    assert result.source["url"] == "https://github.com/larq/zoo/releases/download/r-v1/x.h5"


def test_published_quicknet_and_birealnet_files_are_known():
    """larq-zoo 2.4's download table (larq_zoo/sota/quicknet.py, literature/birealnet.py)."""
    from bnncli.convert.larq import PUBLISHED, importable_models

    assert {k: (p.larq_zoo_model, p.url) for k, p in PUBLISHED.items() if "quick" in k or "bireal" in k} == {
        "quicknet_small": ("QuickNetSmall", "https://github.com/larq/zoo/releases/download/quicknet-v1.0/"
                                            "quicknet_small_weights.h5"),
        "quicknet": ("QuickNet", "https://github.com/larq/zoo/releases/download/quicknet-v1.0/quicknet_weights.h5"),
        "quicknet_large": ("QuickNetLarge", "https://github.com/larq/zoo/releases/download/quicknet-v1.0/"
                                            "quicknet_large_weights.h5"),
        "birealnet_larq": ("BiRealNet", "https://github.com/larq/zoo/releases/download/birealnet-v0.3.0/"
                                        "birealnet_weights.h5"),
    }
    assert PUBLISHED["quicknet_large"].sha256.startswith("c5158e8a5914")
    # larq_zoo/literature/real_to_bin_nets.py: model "r2b", version "v0.1.0", the file with its classifier.
    assert (PUBLISHED["realtobinarynet"].url, PUBLISHED["realtobinarynet"].sha256[:12]) == (
        "https://github.com/larq/zoo/releases/download/r2b-v0.1.0/r2b_weights.h5", "e8fd16ca1ab9")
    assert set(PUBLISHED) <= set(importable_models())
    assert "birealnet18" not in importable_models()  # not Larq Zoo's (BatchNorm eps 1e-5)


def test_published_xnornet_and_binary_alexnet_files_are_known():
    """larq-zoo 2.4's download table (larq_zoo/literature/xnornet.py, binary_alex_net.py)."""
    from bnncli.convert.larq import NOT_IMPORTED, PUBLISHED

    assert {k: (p.larq_zoo_model, p.url) for k, p in PUBLISHED.items() if "alex" in k or "xnor" in k} == {
        "xnornet": ("XNORNet", "https://github.com/larq/zoo/releases/download/xnornet-v0.2.0/xnornet_weights.h5"),
        "binary_alexnet": ("BinaryAlexNet", "https://github.com/larq/zoo/releases/download/binary_alexnet-v0.3.0/"
                                            "binary_alexnet_weights.h5"),
    }
    assert PUBLISHED["xnornet"].sha256.startswith("e6ba24f78565")
    assert PUBLISHED["binary_alexnet"].sha256.startswith("7fc065c47c5c")
    assert "XNORNet" not in NOT_IMPORTED and "BinaryAlexNet" not in NOT_IMPORTED


def test_xnornet_and_binary_alexnet_are_told_apart_by_their_layers(tmp_path, capsys):
    """Neither file names its model; the shapes of their layers do (a float or a binary stem conv,
    a Dense or a binary classifier conv)."""
    for name in ALEXNETS:
        anonymous = tmp_path / f"weights_{name[0]}.h5"
        shutil.copy(FIXTURES / INFO[name]["h5"], anonymous)
        code, out, err = bnn(capsys, "import", "larq", anonymous, "-o", tmp_path / f"{name}.pt", "--image-size", 64,
                             "--json")
        assert code == 0, err
        assert json.loads(out)["arch"] == name and json.loads(out)["params"] == INFO[name]["params"]["trainable"]
    _refused(capsys, tmp_path, FIXTURES / "xnornet_tiny.h5", "does not fit binary_alexnet_tiny", "--arch",
             "binary_alexnet_tiny")


def test_an_image_size_the_imported_model_cannot_take_is_refused(tmp_path, capsys):
    """Larq Zoo's XNOR-Net and BinaryAlexNet read a fixed map with their classifier: the tiny ones
    take 57-88 px (their first classifier layer 1x1), the ImageNet ones 217-248 px."""
    _refused(capsys, tmp_path, FIXTURES / "xnornet_tiny.h5", "xnornet_tiny cannot take 32x32 inputs",
             "--image-size", "32")
    _refused(capsys, tmp_path, FIXTURES / "binary_alexnet_tiny.h5", "binary_alexnet_tiny cannot take 56x56 inputs",
             "--image-size", "56")


def test_binary_alexnets_first_dense_layer_reads_the_map_flattened_channels_last():
    """Keras' Reshape flattens an [H, W, C] map in (h, w, c) order; the imported 6x6 conv over the map
    (a [out, C, kh, kw] kernel) must sum the same products as a 1x1 conv on that flattened vector."""
    from bnncli.convert.larq import _copy, _expected_shapes
    from bnncli.models.alexnet import FlattenedBinaryConv2d

    conv = FlattenedBinaryConv2d(5, 7, (3, 2))
    assert _expected_shapes("flattened binary conv", conv) == {"kernel": (1, 1, 30, 7)}
    rng = np.random.default_rng(0)
    kernel = rng.uniform(-1, 1, (1, 1, 30, 7)).astype(np.float32)
    _copy("flattened binary conv", conv, {"kernel": kernel})
    x = rng.normal(size=(4, 3, 2, 5)).astype(np.float32)  # NHWC, as Keras holds the map
    keras = np.where(x.reshape(4, 30) >= 0, 1, -1) @ np.where(kernel[0, 0] >= 0, 1, -1)
    with torch.no_grad():
        ours = conv(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    assert ours.shape == (4, 7, 1, 1) and np.array_equal(ours.numpy()[:, :, 0, 0], keras.astype(np.float32))


def test_xnornet_kernels_are_clamped_as_its_quantizer_clips_them(tmp_path):
    """Larq Zoo's xnor_weight_scale scales sign(W) by mean|clip(W, -1, 1)|: a latent weight beyond
    1 (which its weight_clip constraint never leaves in a trained file) counts as 1."""
    def grow(f):
        d = f["quant_conv2d/quant_conv2d/kernel:0"]
        d[...] = d[()] * 3
    path = _edit(_copy(tmp_path, "xnornet_tiny.h5"), grow)
    model, _, _ = convert(path, image_size=64)
    with h5py.File(path, "r") as f:
        kernel = f["quant_conv2d/quant_conv2d/kernel:0"][()]
    assert np.abs(kernel).max() > 1
    assert np.array_equal(model.conv2.weight.detach().numpy(), np.clip(kernel, -1, 1).transpose(3, 2, 0, 1))
    assert model.conv2.scaling == "xnor"


def test_a_1000_class_import_names_the_imagenet_synsets(tmp_path):
    from bnncli.convert.larq import class_names_for

    names = class_names_for(1000, None)
    assert names == sorted(imagenet_names()) and len(names) == 1000 and names[0] == "n01440764"
    with pytest.raises(UsageError, match="3 class names given; the model has 10 outputs"):
        class_names_for(10, ["a", "b", "c"])


def test_predict_and_eval_take_the_imported_checkpoint(imported, tmp_path, capsys):
    ckpt = imported["resnete_tiny"]
    image = FIXTURES / "preprocess_0.png"
    code, out, err = bnn(capsys, "predict", "--model", ckpt, image, "--json")
    assert code == 0, err
    got = json.loads(out)
    first = got[0] if isinstance(got, list) else got["predictions"][0]
    assert "class_" in json.dumps(first)
    folder = tmp_path / "data"
    for i in range(2):
        (folder / f"class_{i}").mkdir(parents=True)
        shutil.copy(FIXTURES / f"preprocess_{i}.png", folder / f"class_{i}" / "a.png")
    code, out, err = bnn(capsys, "eval", ckpt, "--data", folder, "--json")
    assert code == 0, err
    assert json.loads(out)["images"] == 2


# --- Larq Zoo's preprocessing --------------------------------------------------------------------


@pytest.mark.parametrize("i", [0, 1, 2])
def test_larq_preprocessing_equals_tensorflows(i):
    """larq_zoo's preprocess_image_tensor at 28 px (crop padding 4, so the crop is 0.875 as at 224)
    and sampled values of its 224 px preprocess_input, against bnncli's NumPy pipeline."""
    data = np.load(FIXTURES / "preprocess.npz")
    image = Image.open(FIXTURES / f"preprocess_{i}.png")
    w, h = image.size
    assert list(larq_crop_box(h, w, 0.875)) == data[f"crop_{i}"].tolist()
    at28 = {**preprocessing("larq", 28), "resize": 32}  # the fixture's crop padding 4: 28 / 32 = 0.875
    small = preprocess_image(image, at28).transpose(1, 2, 0)
    np.testing.assert_allclose(small, data[f"out_{i}"], rtol=0, atol=2e-5)
    # larq-zoo's own rule at 64 px (crop padding 32): the preset's crop is 64 / 96 of the shorter side.
    at64 = preprocess_image(image, preprocessing("larq", 64)).transpose(1, 2, 0)
    idx = data[f"idx64_{i}"].astype(int)
    np.testing.assert_allclose(at64[idx[:, 0], idx[:, 1], idx[:, 2]], data[f"val64_{i}"], rtol=0, atol=2e-5)
    full = preprocess_image(image, preprocessing("larq", 224)).transpose(1, 2, 0)
    idx = data[f"full_idx_{i}"].astype(int)
    np.testing.assert_allclose(full[idx[:, 0], idx[:, 1], idx[:, 2]], data[f"full_val_{i}"], rtol=0, atol=2e-5)


def test_the_larq_preset_crops_as_larq_zoo_at_every_size():
    """larq_zoo.training.data: a crop of S / (S + 32) of the shorter side (0.875 only at 224)."""
    assert [preprocessing("larq", s)["resize"] for s in (224, 64, 32, 299)] == [256, 96, 64, 331]
    assert preprocessing("imagenet", 64)["resize"] == 73  # torchvision's rule stays S / 0.875


def test_every_backend_preprocesses_larq_models_alike():
    """PyTorch evaluation takes the runtime's own function (bnncli.data.transforms.RuntimePreprocess)."""
    from bnncli.data.transforms import eval_transform

    pre = preprocessing("larq", 224)
    image = Image.open(FIXTURES / "preprocess_1.png").convert("RGB")
    assert np.array_equal(eval_transform(pre)(image).numpy(), preprocess_image(image, pre))


# --- refusals: one line, exit 2, nothing written ------------------------------------------------


def _copy(tmp_path: Path, name: str = "resnete_tiny.h5") -> Path:
    target = tmp_path / name
    shutil.copy(FIXTURES / name, target)
    return target


def _refused(capsys, tmp_path, weights, needle, *extra):
    out = tmp_path / "out.pt"
    code, _, err = bnn(capsys, "import", "larq", weights, "-o", out, *extra)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def _names(f) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]


def _set_names(f, names: list[str]) -> None:
    f.attrs["layer_names"] = np.array(names, dtype=h5py.string_dtype())


def _edit(path: Path, fn) -> Path:
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def test_foreign_and_damaged_files_are_refused(tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    _refused(capsys, tmp_path, text, "is not an HDF5 file")
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes((FIXTURES / "resnete_tiny.h5").read_bytes()[:60_000])
    _refused(capsys, tmp_path, truncated, "damaged or truncated HDF5 file")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    _refused(capsys, tmp_path, other, "not a Keras weights file (no layer_names attribute)")
    _refused(capsys, tmp_path, tmp_path / "missing.h5", "weights file not found")


def test_a_file_that_does_not_fit_names_its_first_misfit_layer(tmp_path, capsys):
    # Another model's file.
    _refused(capsys, tmp_path, FIXTURES / "binarydensenet_tiny.h5",
             "does not fit resnete_tiny: layer conv2d does not fit resnete_tiny's stem.0: kernel is [7, 7, 3, 32], "
             "expected [7, 7, 3, 16]",
             "--arch", "resnete_tiny")

    # A wrong shape.
    def reshape(f):
        del f["quant_conv2d_3/quant_conv2d_3/kernel:0"]
        f["quant_conv2d_3/quant_conv2d_3"].create_dataset("kernel:0", data=np.zeros((3, 3, 32, 31), np.float32))
    _refused(capsys, tmp_path, _edit(_copy(tmp_path), reshape),
             "layer quant_conv2d_3 does not fit resnete_tiny's features.3.conv: kernel is [3, 3, 32, 31], "
             "expected [3, 3, 32, 32]")

    # A missing layer (its group and its entry in layer_names).
    def drop(f):
        _set_names(f, [n for n in _names(f) if n != "quant_conv2d_7"])
        del f["quant_conv2d_7"]
    _refused(capsys, tmp_path, _edit(_copy(tmp_path), drop), "none for features.7.conv")

    # An extra layer.
    def extra(f):
        g = f.create_group("quant_conv2d_8")
        g.attrs["weight_names"] = np.array(["quant_conv2d_8/kernel:0"], dtype=h5py.string_dtype())
        g.create_dataset("quant_conv2d_8/kernel:0", data=np.zeros((3, 3, 128, 128), np.float32))
        _set_names(f, [*_names(f), "quant_conv2d_8"])
    _refused(capsys, tmp_path, _edit(_copy(tmp_path), extra), "layer quant_conv2d_8 is one binary conv more")

    # A layer kind no bnncli model has, and a layer whose weights are missing.
    def unknown(f):
        f.move("dense", "separable_conv2d")
        _set_names(f, ["separable_conv2d" if n == "dense" else n for n in _names(f)])
    _refused(capsys, tmp_path, _edit(_copy(tmp_path), unknown), "layer separable_conv2d is of a kind no bnncli")

    def lose(f):
        del f["conv2d/conv2d/kernel:0"]
    _refused(capsys, tmp_path, _edit(_copy(tmp_path), lose), "layer conv2d lacks its weight conv2d/kernel:0")

    def nan(f):
        f["batch_normalization_2/batch_normalization_2/gamma:0"][0] = np.nan
    _refused(capsys, tmp_path, _edit(_copy(tmp_path), nan), "layer batch_normalization_2: gamma holds NaN")


def test_a_file_without_its_classifier_is_refused(tmp_path, capsys):
    def notop(f):
        _set_names(f, [n for n in _names(f) if n != "dense"])
        del f["dense"]
    _refused(capsys, tmp_path, _edit(_copy(tmp_path), notop), "no float conv or no dense layer")

    def alexnet_notop(f):  # BinaryAlexNet's classifier: its three binary dense layers (1x1 convs) and BatchNorms
        drop = {f"quant_conv2d_{i}" for i in (5, 6, 7)} | {f"batch_normalization_{i}" for i in (5, 6, 7)}
        _set_names(f, [n for n in _names(f) if n not in drop])
        for n in drop:
            del f[n]
    _refused(capsys, tmp_path, _edit(_copy(tmp_path, "binary_alexnet_tiny.h5"), alexnet_notop),
             "no float conv or no dense layer")


def test_pairing_follows_creation_order_not_file_order(tmp_path):
    """The file lists a ResNetE block's main BatchNorm before its shortcut's, which Larq Zoo created
    first (the trap): pairing by file order would swap them silently. Shuffling layer_names changes nothing."""
    names = [n.decode() if isinstance(n, bytes) else n for n in INFO["resnete_tiny"]["keras_layer_names"]]
    assert names.index("batch_normalization_5") < names.index("batch_normalization_4")  # the trap is there
    model, _, _ = convert(FIXTURES / "resnete_tiny.h5")
    order = [q for kind, q, _ in keras_order(model) if kind == "BatchNorm"]
    assert order.index("features.2.shortcut.bn") < order.index("features.2.bn")  # Larq's creation order

    def shuffle(f):
        layer_names = _names(f)
        np.random.default_rng(0).shuffle(layer_names)
        _set_names(f, layer_names)
    shuffled, _, _ = convert(_edit(_copy(tmp_path), shuffle))
    a, b = model.state_dict(), shuffled.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    def clash(f):  # two layers claiming one creation index: their order is unknown
        f.move("batch_normalization_5", "batch_normalization_04")
        _set_names(f, ["batch_normalization_04" if n == "batch_normalization_5" else n for n in _names(f)])
    with pytest.raises(ArtifactError, match="batch_normalization_04 and batch_normalization_4 claim the same creation"):
        convert(_edit(_copy(tmp_path, "resnete_tiny.h5"), clash))


def test_output_is_never_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "r.pt"
    out.write_bytes(b"precious")
    code, _, err = bnn(capsys, "import", "larq", FIXTURES / "resnete_tiny.h5", "-o", out)
    assert code == 2 and "exists; pass --force" in err and out.read_bytes() == b"precious"
    code, _, err = bnn(capsys, "import", "larq", FIXTURES / "resnete_tiny.h5", "-o", out, "--force")
    assert code == 0, err
    assert load_checkpoint(out)["arch"] == "resnete_tiny"


def test_missing_h5py_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    _refused(capsys, tmp_path, FIXTURES / "resnete_tiny.h5", "pip install 'bnncli[larq]'")
    assert keras_h5.INSTALL_HINT.startswith("reading Keras HDF5 files needs h5py")


def test_models_lists_larq_zoos_published_files_and_names_the_models_it_does_not_import(capsys):
    code, out, err = bnn(capsys, "models", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["quicknet_large"]["larq_zoo"]["top1"] == 66.9 and rows["quicknet_large"]["larq_zoo"]["top5"] == 87.0
    assert rows["birealnet_larq"]["larq_zoo"]["url"].endswith("/birealnet-v0.3.0/birealnet_weights.h5")
    assert rows["birealnet18"]["larq_zoo"] is None and rows["quicknet_tiny"]["larq_zoo"] is None
    code, out, err = bnn(capsys, "models")
    assert code == 0, err
    text = " ".join(out.split())
    assert rows["meliusnet22"]["larq_zoo"]["url"].endswith("/meliusnet22-v0.1.0/meliusnet22_weights.h5")
    for zoo_name in ("DoReFaNet",):
        assert f"{zoo_name} (" in text, zoo_name
    for zoo_name in ("RealToBinaryNet", "XNORNet", "BinaryAlexNet"):  # imported: not in the list of the others
        assert f"{zoo_name} (" not in text, zoo_name
    assert rows["xnornet"]["larq_zoo"]["top1"] == 44.96 and rows["xnornet"]["larq_zoo"]["top5"] == 69.18
    assert rows["binary_alexnet"]["larq_zoo"]["top1"] == 36.30 and rows["binary_alexnet"]["larq_zoo"]["top5"] == 61.53
    assert "DoReFaNet (53.39% top-1): out of scope: 2-bit activations" in text
