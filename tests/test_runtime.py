"""The NumPy runtime against PyTorch over the whole registry, without torch, and its edges."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import exact_inputs, make_exact, small_registry_model, write_checkpoint
from PIL import Image

from bnncli import list_models
from bnncli.artifacts.onnx_file import ort_session
from bnncli.deploy.lowering import fold, lower
from bnncli.deploy.onnx_export import to_onnx
from bnncli.deploy.pack import packed_graph
from bnncli.deploy.verification import compare
from bnncli.errors import ArtifactError, DataError
from bnncli.graph import format
from bnncli.graph.graph import Graph, Node
from bnncli.images.labels import imagenet_names, readable_labels
from bnncli.images.preprocess import preprocess_image
from bnncli.runtime import Model, backends, load

TINY = [n for n in list_models() if "tiny" in n]
BIG = [n for n in list_models() if "tiny" not in n]


_model = small_registry_model


@pytest.fixture(autouse=True, params=backends.available())
def backend(request, monkeypatch):
    """Every test here runs on every backend this machine has (NumPy, and numba with the fast extra):
    ``$BNN_BACKEND`` picks it for every Model and load() that does not name one."""
    monkeypatch.setenv(backends.ENV_VAR, request.param)
    return request.param


def _meta(model, classes: int, size: int = 32):
    from bnncli.data.presets import preprocessing

    return {"arch": model.bnn_arch, "arch_kwargs": model.bnn_kwargs, "class_names": [f"c{i}" for i in range(classes)],
            "preprocessing": preprocessing("small", size), "float_dtype": "float32", "producer": "test"}


def _check(reference: np.ndarray, got: np.ndarray) -> None:
    p = compare(reference, got)
    assert p.max_rel_diff <= 1e-3, p
    assert p.top1_agree == p.samples, p


def _parity(model, x: torch.Tensor, unfolded: bool = False) -> None:
    """Packed runtime (the file's bytes, decoded and validated) and onnxruntime against PyTorch."""
    with torch.no_grad():
        expected = model(x).numpy()
    graph = lower(model)
    meta = _meta(model, expected.shape[1])
    decoded, decoded_meta = format.decode(format.encode(packed_graph(graph), meta))
    _check(expected, Model(decoded, decoded_meta, threads=2)(x.numpy()))
    _check(expected, ort_session(to_onnx(graph, meta)).run(None, {"input": x.numpy()})[0])
    if unfolded:  # the graph before folding runs too, to the same result
        _check(expected, Model(graph, threads=1)(x.numpy()))


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_match_pytorch_with_random_float_weights(name):
    model = _model(name)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x[2] = 0.0  # exact zeros all the way into the first binarizations
    _parity(model, x, unfolded=True)


@pytest.mark.parametrize("name", TINY + BIG)
def test_every_registered_model_matches_pytorch_exactly(name):
    """Every model of the registry, the ImageNet ones with their 32x32 thumbnail stem, on weights
    where float arithmetic is exact (see conftest.make_exact): no sign can flip by rounding, so
    this checks that every backend computes PyTorch's function."""
    model = _model(name)
    make_exact(model, seed=1)
    _parity(model, exact_inputs(3, seed=2))


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("name", ["binarydensenet_tiny", "resnete_tiny"])
def test_every_pad_value_and_the_binary_downsample(name, pad_value):
    extra = {"binary_downsample": True, "scaling": "xnor"} if name == "resnete_tiny" else {}
    model = _model(name, seed=3, pad_value=pad_value, **extra)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    _check(expected, Model(packed_graph(lower(model)), threads=2)(x.numpy()))


def test_fold_removes_every_batchnorm():
    for name in ("binarydensenet_tiny", "resnete_tiny", "birealnet_tiny"):
        ops = fold(lower(_model(name))).op_counts()
        assert "BatchNorm" not in ops
    dense = fold(lower(_model("binarydensenet_tiny")))
    # Dense-layer BatchNorms became binarization thresholds (negative scales flip the comparison).
    convs = [n for n in dense.nodes if n.op == "BinaryConv"]
    assert all("in_threshold" in n.params for n in convs)
    assert any("in_negate" in n.params for n in convs)


def test_intermediates_are_returned_in_pytorch_layout():
    model = _model("resnete_tiny")
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    def keep(module, inputs, output) -> None:
        seen["stem"] = output.detach().numpy()

    model.stem[0].register_forward_hook(keep)
    with torch.no_grad():
        model(x)
    values = Model(lower(model)).run(x.numpy(), intermediates=True)
    assert values["stem_0"].shape == seen["stem"].shape == (2, 16, 32, 32)
    assert np.allclose(values["stem_0"], seen["stem"], atol=1e-5)
    assert values["input"].shape == (2, 3, 32, 32) and values["logits"].shape == (2, 10)


def test_runtime_runs_with_torch_unimportable(tmp_path, tiny_checkpoint):
    from bnncli.deploy.pack import pack_model

    packed = tmp_path / "tiny.bnn"
    pack_model(tiny_checkpoint, packed)
    image = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(image)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from bnncli.runtime import load, preprocess_files
        model = load({str(packed)!r})
        x = preprocess_files([{str(image)!r}], model.preprocessing)
        logits = model(x)
        assert logits.shape == (1, 4), logits.shape
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] == "torch"]
        print("ok", int(logits.argmax()))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")
    # The same prediction as in this process.
    model = load(packed)
    from bnncli.runtime import preprocess_files

    assert int(res.stdout.split()[1]) == int(model(preprocess_files([image], model.preprocessing)).argmax())


def test_load_validates_ops(tmp_path):
    good = lower(_model("resnete_tiny"))
    bad = Graph([Node("Softmax", "s", ["input"], ["logits"])], {})
    with pytest.raises(ArtifactError, match="unknown op 'Softmax'.*knows Conv, BinaryConv"):
        Model(bad)
    node = next(n for n in good.nodes if n.op == "BinaryConv")
    node.attrs["pad_value"] = 0.5
    with pytest.raises(ArtifactError, match="pad_value must be 0, -1 or 1"):
        Model(good)


def test_bad_input_is_a_data_error():
    model = Model(lower(_model("resnete_tiny")))
    with pytest.raises(DataError, match="4 channels; the model takes 3"):
        model(np.zeros((1, 4, 32, 32), np.float32))
    with pytest.raises(DataError, match=r"\[N, C, H, W\]"):
        model(np.zeros((3, 32, 32), np.float32))


@pytest.mark.parametrize("size,mode,preset,image_size", [
    ((50, 40), "RGB", "small", 32), ((40, 50), "RGB", "imagenet", 64), ((32, 32), "RGB", "small", 32),
    ((300, 257), "RGB", "imagenet", 224), ((37, 61), "L", "small", 24), ((20, 25), "RGB", "small", 32),
])
def test_preprocessing_equals_the_torchvision_eval_transform(size, mode, preset, image_size):
    from torchvision import transforms as T

    from bnncli.data.presets import preprocessing

    channels = 1 if mode == "L" else 3
    pp = preprocessing(preset, image_size, in_channels=channels)
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray((rng.random((size[1], size[0], channels)) * 255).astype(np.uint8).squeeze())
    tv = T.Compose([T.Resize(pp["resize"], interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                    T.CenterCrop(pp["image_size"]), T.ToTensor(), T.Normalize(pp["mean"], pp["std"])])
    expected = tv(image).numpy()
    got = preprocess_image(image, pp)
    assert got.shape == expected.shape == (channels, image_size, image_size)
    assert np.allclose(got, expected, atol=1e-6)


def test_synset_ids_get_readable_names():
    names = imagenet_names()
    assert len(names) == 1000 and names["n01440764"] == "tench" and names["n15075141"] == "toilet tissue"
    assert list(names) == sorted(names)  # class index order of ImageNet folders
    assert readable_labels(["n01440764", "n02102040"]) == ["tench", "English springer"]
    assert readable_labels(["cat", "n01440764"]) == ["cat", "n01440764"]  # not all synsets: unchanged


def test_load_reports_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load(tmp_path / "nope.bnn")


def test_checkpoint_helper_roundtrip(tmp_path):
    path = write_checkpoint(tmp_path / "r.pt", "resnete_tiny", class_names=("x", "y"))
    from bnncli.artifacts.checkpoint import load_model

    model, ckpt = load_model(path)
    assert ckpt["class_names"] == ["x", "y"] and model.fc.out_features == 2


def _concat_chain(links: int, channels: int = 2) -> Graph:
    """input -> 1x1 conv t -> Concat(input, t) -> Concat(that, t) -> ... (``links`` concatenations)."""
    rng = np.random.default_rng(0)
    tensors = {"w": rng.standard_normal((channels, 3, 1, 1)).astype(np.float32)}
    conv = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}
    nodes = [Node("Conv", "conv", ["input"], ["t"], conv, {"weight": "w"})]
    prev = "input"
    for i in range(links):
        out = "logits" if i == links - 1 else f"c{i}"
        nodes.append(Node("Concat", f"cat{i}", [prev, "t"], [out], {"axis": 1}))
        prev = out
    return Graph(nodes, tensors)


def test_a_long_concatenation_chain_loads_in_linear_time_and_plans_its_growth():
    """1,600 chained concatenations (about cubic to plan before: minutes) load at once; each link
    reserves room for what the rest of the chain adds."""
    model = Model(_concat_chain(1600))
    growth = [op.growth for op in model.ops if op.type == "Concat"]
    assert growth == [2 * (1599 - i) for i in range(1600)]
    x = np.random.default_rng(1).standard_normal((1, 3, 2, 2)).astype(np.float32)
    y = Model(_concat_chain(5))(x)
    weight = np.random.default_rng(0).standard_normal((2, 3, 1, 1)).astype(np.float32)[:, :, 0, 0]
    t = np.einsum("oc,nchw->nohw", weight, x)
    assert y.shape == (1, 13, 2, 2) and np.allclose(y, np.concatenate([x] + [t] * 5, axis=1), atol=1e-6)


@pytest.mark.parametrize("name", ["binarydensenet_tiny", "binarydensenet28"])
def test_dense_layers_write_into_the_concatenation(name):
    """A BinaryDenseNet layer's binary conv writes straight into its block's buffer; the results are unchanged."""
    graph = packed_graph(lower(small_registry_model(name)))
    model = Model(graph, threads=1)
    planned = [op for op in model.ops if id(op) in model._in_place]
    assert planned and all(op.type == "BinaryConv" for op in planned)
    copying = Model(graph, threads=1)
    copying._in_place = {}  # every concatenation copies its inputs
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = copying(x)
    assert np.array_equal(model(x), expected)
    assert np.array_equal(model(x), expected)  # again, with the kernels the first call prepared
    assert np.array_equal(model.run(x, intermediates=True)[graph.outputs[0]], expected)


@pytest.mark.parametrize("name", ["binarydensenet_tiny", "meliusnet_tiny"])
def test_dense_blocks_are_packed_by_their_producers(name, backend, monkeypatch):
    """With the compiled backend, each value a dense block concatenates is packed right after it
    is computed for every binary conv that reads it (Model._plan_prepacking), and those convs read
    no float input: the same logits as without it, as with intermediates (which runs every op as
    it is), and as where every value is too large for it (FAN_OUT_MAX_BYTES), at two sizes."""
    from bnncli.runtime import model as M

    graph = packed_graph(lower(small_registry_model(name)))
    model = Model(graph, threads=1)
    if backend != "numba":
        assert not model._segments  # the NumPy kernels pack each input themselves
        return
    readers = [op for op in model.ops if id(op) in model._segments]
    assert readers and all(op.type == "BinaryConv" for op in readers)
    from bnncli.runtime.backends.numba import binary_conv as NK

    calls = []  # per binary conv call: whether its input came packed
    call = NK.BinaryConvKernel.__call__
    monkeypatch.setattr(NK.BinaryConvKernel, "__call__",
                        lambda self, *a, prepacked=None, **k: calls.append(prepacked is not None)
                        or call(self, *a, prepacked=prepacked, **k))
    for size in (32, 40):
        x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
        plain = Model(graph, threads=1)
        plain._packers = {}
        expected = plain(x)
        calls.clear()
        assert np.array_equal(model(x), expected)
        assert sum(calls) == len(readers)
        assert np.array_equal(model(x), expected)  # again, into the buffers the first call made
        assert np.array_equal(model.run(x, intermediates=True)[graph.outputs[0]], expected)
    monkeypatch.setattr(M, "FAN_OUT_MAX_BYTES", 0)
    calls.clear()
    assert np.array_equal(Model(graph, threads=1)(x), expected) and calls and not any(calls)


@pytest.mark.parametrize("name", ["binarydensenet_tiny", "binarydensenet_tiny_wide", "binarydensenet_tiny_dilated"])
def test_dense_blocks_are_pooled_as_they_are_computed(name, backend, monkeypatch):
    """With the compiled backend, a dense block that only packed binary convs and its transition's
    max pool read is pooled part by part (Model._plan_pooled_chains): its concatenations never run
    (each layer writes a buffer of its own), and the logits equal the NumPy backend's, those with
    intermediates (every concatenation made), and those where no chain can be used (every map
    above FAN_OUT_MAX_BYTES), at batch 1 and 2, two sizes, on one and two threads."""
    from bnncli.runtime import model as M
    from bnncli.runtime.ops import Concat

    graph = packed_graph(lower(small_registry_model(name)))
    if backend != "numba":
        assert not Model(graph, threads=1)._chains  # without fan-outs every concatenation is made
        return
    reference = Model(graph, threads=1, backend="numpy")
    models = [Model(graph, threads=t) for t in (1, 2)]
    links = {id(op) for op in models[0].ops if id(op) in models[0]._chain_links}
    assert models[0]._chains and links
    assert all(op.type == "MaxPool" for op in (chain.pool for chain in models[0]._chains))
    made = []  # the concatenations of chains that ran
    call = Concat.__call__
    monkeypatch.setattr(Concat, "__call__", lambda self, *xs: made.append(self) or call(self, *xs))
    for size, n in ((32, 1), (40, 2)):
        x = np.random.default_rng(size).standard_normal((n, 3, size, size)).astype(np.float32)
        expected = reference(x)
        for model in models:
            made.clear()
            assert np.array_equal(model(x), expected)
            assert not [op for op in made if id(op) in model._chain_links]
            assert np.array_equal(model(x), expected)  # again, into the buffers the first call left
            made.clear()
            assert np.array_equal(model.run(x, intermediates=True)[graph.outputs[0]], expected)
            assert len([op for op in made if id(op) in model._chain_links]) == len(model._chain_links)
    monkeypatch.setattr(M, "FAN_OUT_MAX_BYTES", 0)
    made.clear()
    model = Model(graph, threads=1)
    assert np.array_equal(model(x), expected) and len([op for op in made if id(op) in model._chain_links]) == len(
        model._chain_links)


def test_a_concatenation_read_by_a_float_op_is_made(backend):
    """A dense block whose concatenation another op reads too (here a Relu whose result nothing
    uses) is not pooled part by part: the plan leaves that chain out, and the logits stay those
    of the NumPy backend."""
    graph = packed_graph(lower(small_registry_model("binarydensenet_tiny")))
    model = Model(graph, threads=1)
    if backend != "numba":
        return
    chain = model._chains[0]
    last = next(op for op in model.ops if id(op) in chain.links and chain.links[id(op)] == len(chain.parts))
    nodes = list(graph.nodes)
    nodes.insert(nodes.index(last.node) + 1, Node("Relu", "extra_relu", [last.node.outputs[0]], ["extra"], {}))
    wider = Model(Graph(nodes, graph.tensors, graph.inputs, graph.outputs), threads=1)
    pools = [c.pool.node.name for c in wider._chains]
    assert chain.pool.node.name not in pools and len(pools) == len(model._chains) - 1
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert np.array_equal(wider(x), Model(graph, threads=1, backend="numpy")(x))


def test_a_reservation_left_from_a_failed_call_is_not_used():
    from bnncli.runtime.ops import Concat, Context

    ctx = Context(1, "numpy")
    cat = Concat(Node("Concat", "c", ["a", "b"], ["y"], {"axis": 1}), {}, ctx)
    a, b = (np.full((2, 1, 2, 2), v, np.float32) for v in (1.0, 2.0))
    cat.reserve([a], 2)[...] = 7.0  # a producer wrote for input `a`, then the call never came
    fresh = np.full((2, 1, 2, 2), 3.0, np.float32)
    y = cat(fresh, b)
    assert np.array_equal(y, np.concatenate([fresh, b]))
    slot = cat.reserve([a], 2)
    slot[...] = b
    assert np.array_equal(cat(a, slot), np.concatenate([a, b]))


def test_an_empty_batch_is_refused_in_one_line():
    model = Model(_concat_chain(2))
    with pytest.raises(DataError, match="no images"):
        model(np.zeros((0, 3, 4, 4), np.float32))
