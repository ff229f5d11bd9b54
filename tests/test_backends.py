"""The runtime's backends: the choice (argument, $BNN_BACKEND, auto), its report, and the compiled
backend model by model against the NumPy reference (bit for bit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FOLDER_CLASSES, small_registry_model, write_checkpoint

from bnncli import list_models
from bnncli.cli.app import main
from bnncli.deploy.lowering import lower
from bnncli.deploy.pack import packed_graph
from bnncli.errors import UsageError
from bnncli.runtime import Model, backends

HAVE_NUMBA = "numba" in backends.available()
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed (the 'fast' extra)")


def test_choice_by_argument_environment_and_auto(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.resolve("numpy") == "numpy"
    assert backends.resolve(None) == ("numba" if HAVE_NUMBA else "numpy")
    assert backends.resolve("auto") == backends.resolve(None)
    monkeypatch.setenv(backends.ENV_VAR, "numpy")
    assert backends.resolve(None) == "numpy"
    assert backends.resolve("auto") == ("numba" if HAVE_NUMBA else "numpy")  # an argument beats the variable
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(UsageError, match=r"unknown runtime backend 'cuda' \(from \$BNN_BACKEND\)"):
        backends.resolve(None)
    with pytest.raises(UsageError, match="unknown runtime backend 'gpu'; choose one of auto, numpy, numba"):
        backends.resolve("gpu")


def test_numba_asked_for_but_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(backends, "_numba_backend", lambda: None)
    assert backends.resolve("auto") == "numpy"  # auto falls back to the reference
    with pytest.raises(UsageError, match=r"pip install 'bnncli\[fast\]'"):
        backends.resolve("numba")


def test_predict_and_eval_report_the_backend(tmp_path, capsys, image_folder, monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    ckpt = write_checkpoint(tmp_path / "m.pt", class_names=FOLDER_CLASSES)
    assert main(["pack", str(ckpt), "-o", str(tmp_path / "m.bnn")]) == 0
    image = next(p for p in sorted(image_folder.rglob("*.png")))
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m.bnn"), str(image), "--backend", "numpy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["backend"] == "numpy"
    assert main(["predict", "--model", str(ckpt), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["backend"] == "pytorch"
    assert main(["eval", str(tmp_path / "m.bnn"), "--data", str(image_folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == ("numba" if HAVE_NUMBA else "numpy")
    code = main(["predict", "--model", str(tmp_path / "m.bnn"), str(image), "--backend", "gpu"])
    assert code == 2 and "unknown runtime backend 'gpu'" in capsys.readouterr().err


_model = small_registry_model


@needs_numba
@pytest.mark.parametrize("name", list_models())
def test_compiled_backend_equals_numpy_bit_for_bit(name):
    graph = packed_graph(lower(_model(name)))
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    x[2] = 0.0  # exact zeros reach the first binarizations
    reference = Model(graph, threads=1, backend="numpy")
    for threads in (1, 2):
        compiled = Model(graph, threads=threads, backend="numba")
        assert compiled.backend == "numba"
        assert np.array_equal(compiled(x), reference(x)), (name, threads)


@needs_numba
@pytest.mark.parametrize("name", list_models())
def test_compiled_backend_on_helper_threads_equals_numpy(name, monkeypatch):
    """Every op large enough to be split across the crew's threads (bnncli.runtime.backends.numba.crew)."""
    from bnncli.runtime.backends.numba import binary_conv as numba_kernels
    from bnncli.runtime.backends.numba import float_ops as numba_float

    monkeypatch.setattr(numba_kernels, "CREW_MIN_WORK", 0)
    monkeypatch.setattr(numba_float, "PARALLEL_MIN_ELEMENTS", 0)
    graph = packed_graph(lower(_model(name, seed=3)))
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    reference = Model(graph, threads=1, backend="numpy")(x)
    for threads in (2, 3):
        model = Model(graph, threads=threads, backend="numba")
        assert model.ctx.kernels.crew is not None and model.ctx.kernels.crew.threads == threads
        for _ in range(2):  # the second call reuses the buffers and kernels the first prepared
            assert np.array_equal(model(x), reference), (name, threads)


@needs_numba
@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("padding", ["symmetric", "tensorflow"])
@pytest.mark.parametrize("batch", [1, 4])
def test_compiled_backend_over_pad_values_padding_rules_and_batches(pad_value, padding, batch):
    model = _model("resnete_tiny", seed=2, pad_value=pad_value, padding=padding, thumbnail=False,
                   binary_downsample=True, scaling="xnor")
    graph = packed_graph(lower(model))
    x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)
    assert np.array_equal(Model(graph, threads=2, backend="numba")(x), Model(graph, threads=1, backend="numpy")(x))


def test_the_runtime_runs_where_numba_cannot_be_imported(tmp_path):
    """The 'fast' extra is optional: with numba unimportable, auto falls back to NumPy."""
    import subprocess
    import sys
    import textwrap

    graph = packed_graph(lower(_model("binarydensenet_tiny")))
    from bnncli.data.presets import preprocessing
    from bnncli.graph import format

    meta = {"arch": "binarydensenet_tiny", "arch_kwargs": {}, "class_names": [f"c{i}" for i in range(10)],
            "preprocessing": preprocessing("small", 32), "float_dtype": "float32", "producer": "test"}
    path = format.write_packed(tmp_path / "m.bnn", graph, meta)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["numba"] = None  # as if the extra were not installed
        import numpy as np
        from bnncli.runtime import load
        m = load({str(path)!r})
        assert m.backend == "numpy", m.backend
        print(m(np.zeros((1, 3, 32, 32), np.float32)).shape)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in __import__("os").environ.items() if k != backends.ENV_VAR})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 10)"


@needs_numba
def test_a_cold_cache_says_it_is_compiling(tmp_path, capsys, monkeypatch, image_folder):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(backends, "compiled_cache_state", lambda: "cold")
    monkeypatch.setattr(backends, "warm_compiled_cache", lambda: None)
    ckpt = write_checkpoint(tmp_path / "m.pt", class_names=FOLDER_CLASSES)
    assert main(["pack", str(ckpt), "-o", str(tmp_path / "m.bnn")]) == 0
    capsys.readouterr()
    image = next(p for p in sorted(image_folder.rglob("*.png")))
    assert main(["predict", "--model", str(tmp_path / "m.bnn"), str(image), "--threads", "1"]) == 0
    assert "compiling the numba kernels" in capsys.readouterr().err


@pytest.mark.parametrize("backend", backends.available())
@pytest.mark.parametrize("name", list_models())
def test_fused_forward_equals_every_op_run_on_its_own(name, backend):
    """A forward pass fuses ops (an affine and a ReLU into the max pool that reads them, a residual
    Add into the binary convolution before it, a Relu before a pool); one with ``intermediates``
    runs every node as the graph says. Both give the same logits bit for bit, on every backend."""
    graph = packed_graph(lower(_model(name, seed=4)))
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for threads in (1, 2):
        model = Model(graph, threads=threads, backend=backend)
        unfused = model.run(x, intermediates=True)[graph.outputs[0]]
        assert np.array_equal(model(x), unfused), (name, backend, threads)
        assert np.array_equal(model(x), unfused), (name, backend, threads)  # reused buffers, in-place residuals


def test_fusions_are_planned_where_the_graph_allows(monkeypatch):
    """BinaryDenseNet's transitions pool their affine and ReLU; ResNetE's identity blocks write
    their residual sum from the binary convolution (not the blocks whose shortcut is computed later)."""
    dense = Model(packed_graph(lower(_model("binarydensenet_tiny"))), threads=1, backend="numpy")
    assert dense._pool_affines and all(op.relu for op in dense.ops if id(op) in dense._pool_affines)
    resnet = Model(packed_graph(lower(_model("resnete_tiny"))), threads=1, backend="numpy")
    adds = [op for op in resnet.ops if op.type == "Add"]
    assert 0 < len(resnet._residuals) < len(adds)


@pytest.mark.parametrize("backend", backends.available())
@pytest.mark.parametrize("name", ["resnete_tiny", "binarydensenet_tiny"])
def test_the_stems_bias_is_added_by_its_pool(name, backend):
    """With the ImageNet stem (conv, ReLU, max pool), the pool adds the convolution's bias to each
    tap; the logits equal those of the unfused pass bit for bit."""
    graph = packed_graph(lower(_model(name, seed=5, thumbnail=False)))
    model = Model(graph, threads=2, backend=backend)
    assert len(model._unbiased) == 1
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert np.array_equal(model(x), model.run(x, intermediates=True)[graph.outputs[0]])
