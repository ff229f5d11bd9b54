"""`bnn import larq` reads the named file only, and only as much of it as the model needs.

Every hostile file is built here at run time from the small ResNetE fixture: a weight stored in
external files (a secret, a FIFO, /dev/zero), an external link, a virtual dataset, soft links
that alias one dataset, a layer listed many times, and a classifier shaped to make the model
huge. Each is refused with one line before any value of it is read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bnncli.cli.app import main
from bnncli.convert import keras_h5, larq
from bnncli.errors import ArtifactError

h5py = pytest.importorskip("h5py")

FIXTURE = Path(__file__).parent / "fixtures" / "larq" / "resnete_tiny.h5"
BIAS = "dense/dense/bias:0"  # 10 float32 values: 40 bytes
KERNEL = "dense/dense/kernel:0"  # [128, 10]


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "resnete_tiny.h5"
    shutil.copy(FIXTURE, target)
    return target


def _edit(tmp_path: Path, fn) -> Path:
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def _replace(f, name: str, **kw) -> None:
    """Replace dataset ``name`` of the open file by one made with ``create_dataset(**kw)``."""
    group, leaf = name.rsplit("/", 1)
    del f[name]
    f[group].create_dataset(leaf, **kw)


def _refused(capsys, tmp_path, weights, needle, *extra) -> str:
    out = tmp_path / "out.pt"
    code, _, err = bnn(capsys, "import", "larq", weights, "-o", out, *extra)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    return err


@pytest.fixture
def no_reads(monkeypatch):
    """Fail the test if any weight value is read."""
    def refuse(*args, **kwargs):
        raise AssertionError("a value was read")
    monkeypatch.setattr(keras_h5.KerasWeights, "read", refuse)


def test_external_storage_on_another_file_is_refused_and_never_read(tmp_path, capsys):
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n".ljust(40, b"#"))
    weights = _edit(tmp_path, lambda f: _replace(f, BIAS, shape=(10,), dtype="f4", external=[(str(secret), 0, 40)]))
    _refused(capsys, tmp_path, weights, "is stored in external files; only the named file is read")


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "/dev/urandom"])
def test_external_storage_on_a_fifo_or_device_is_refused_without_hanging(tmp_path, capsys, target):
    if target == "fifo":
        target = str(tmp_path / "pipe")
        os.mkfifo(target)  # reading it would block forever
    weights = _edit(tmp_path, lambda f: _replace(f, KERNEL, shape=(128, 10), dtype="f4",
                                                 external=[(target, 0, 128 * 10 * 4)]))
    _refused(capsys, tmp_path, weights, "stored in external files")


def test_an_external_link_into_another_file_is_refused(tmp_path, capsys):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["bias"] = np.arange(10, dtype=np.float32)

    def link(f):
        del f[BIAS]
        f["dense/dense"]["bias:0"] = h5py.ExternalLink(str(other), "/bias")
    _refused(capsys, tmp_path, _edit(tmp_path, link), "is an external link to another file")

    def link_group(f):  # the layer's whole group in another file
        del f["dense"]
        f["dense"] = h5py.ExternalLink(str(other), "/")
    _refused(capsys, tmp_path, _edit(tmp_path, link_group), "layer dense is an external link")


def test_a_virtual_dataset_is_refused(tmp_path, capsys):
    other = tmp_path / "source.h5"
    with h5py.File(other, "w") as f:
        f["bias"] = np.arange(10, dtype=np.float32)

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(10,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "bias", shape=(10,))
        del f[BIAS]
        f["dense/dense"].create_virtual_dataset("bias:0", layout)
    _refused(capsys, tmp_path, _edit(tmp_path, virtual), "is a virtual dataset")


def test_soft_links_cannot_alias_one_dataset_or_chain(tmp_path, capsys, no_reads):
    # Every BatchNorm weight of one layer a soft link to one huge unallocated dataset: its size
    # is checked before anything is read, so nothing is allocated.
    def alias_huge(f):
        f.create_dataset("huge", shape=(1 << 26,), dtype="f4")  # unallocated: 8 KB on disk
        group = f["batch_normalization/batch_normalization"]
        for key in list(group):
            del group[key]
            group[key] = h5py.SoftLink("/huge")
    err = _refused(capsys, tmp_path, _edit(tmp_path, alias_huge), "soft link per layer")
    assert "batch_normalization" in err

    # One soft link per layer is followed; two layers' weights aliasing one dataset are refused.
    def alias_two(f):
        del f["batch_normalization_1/batch_normalization_1/gamma:0"]
        f["batch_normalization_1/batch_normalization_1"]["gamma:0"] = h5py.SoftLink(
            "/batch_normalization/batch_normalization/gamma:0")
    _refused(capsys, tmp_path, _edit(tmp_path, alias_two), "each weight is its own dataset")

    # A soft link whose target is itself a soft link is not followed.
    def chain(f):
        f["alias"] = h5py.SoftLink("/dense/dense/bias:0")
        del f["dense/dense"]["bias:0"]
        f.move("dense/dense/kernel:0", "dense/dense/k")
        f["dense/dense/bias:0"] = h5py.SoftLink("/alias")
        f["dense/dense/kernel:0"] = h5py.SoftLink("/dense/dense/k")
    _refused(capsys, tmp_path, _edit(tmp_path, chain), "soft link")


def test_a_single_soft_link_per_layer_still_imports(tmp_path, capsys):
    def one(f):
        f.move(BIAS, "moved_bias")
        f["dense/dense"]["bias:0"] = h5py.SoftLink("/moved_bias")
    out = tmp_path / "ok.pt"
    code, _, err = bnn(capsys, "import", "larq", _edit(tmp_path, one), "-o", out)
    assert code == 0, err


def test_a_layer_listed_many_times_is_refused(tmp_path, capsys, no_reads):
    def repeat(f):
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array(names + ["dense"] * 64, dtype=h5py.string_dtype())
    _refused(capsys, tmp_path, _edit(tmp_path, repeat), "layer dense is listed 65 times")


def test_each_weight_is_checked_against_the_model_before_it_is_read(tmp_path, capsys, no_reads):
    # A dense kernel of 2^26 - 1 values (unallocated, so the file stays small): with --arch the
    # model was built for 2^26 - 1 classes (34 GB) before the shapes were compared.
    def wide(f):
        _replace(f, KERNEL, shape=(1, (1 << 26) - 1), dtype="f4")
        _replace(f, BIAS, shape=((1 << 26) - 1,), dtype="f4")
    weights = _edit(tmp_path, wide)
    assert weights.stat().st_size < 1 << 20
    _refused(capsys, tmp_path, weights, "layer dense does not fit resnete_tiny's fc: kernel is [1, 67108863]",
             "--arch", "resnete_tiny")
    _refused(capsys, tmp_path, weights, "no importable model fits the file")


def test_the_model_is_built_only_after_the_shapes_fit(tmp_path, monkeypatch):
    built = []
    real_build = larq._build

    def spy(arch, options, device=None):
        built.append(device)
        return real_build(arch, options, device)
    monkeypatch.setattr(larq, "_build", spy)

    def reshape(f):
        _replace(f, "quant_conv2d_3/quant_conv2d_3/kernel:0", data=np.zeros((3, 3, 32, 31), np.float32))
    with pytest.raises(ArtifactError, match="does not fit"):
        larq.convert(_edit(tmp_path, reshape), arch="resnete_tiny")
    assert built == ["meta"]
    built.clear()
    larq.convert(FIXTURE, arch="resnete_tiny")
    assert built == ["meta", None]


def test_a_dataset_with_a_foreign_filter_is_refused(tmp_path, capsys, no_reads):
    def foreign(f):
        _replace(f, BIAS, shape=(10,), dtype="f4", chunks=(10,), compression=32015, allow_unknown_filter=True)
    _refused(capsys, tmp_path, _edit(tmp_path, foreign), "is stored with filter 32015")


@pytest.mark.parametrize("kind", ["folder", "fifo", "dev-zero-link"])
def test_the_weights_path_must_be_a_regular_file(tmp_path, capsys, kind):
    if kind == "folder":
        path, needle = tmp_path / "w.h5", "a folder, not a weights file"
        path.mkdir()
    elif kind == "fifo":
        path, needle = tmp_path / "w.h5", "a FIFO (named pipe), not a weights file"
        os.mkfifo(path)
    else:
        path, needle = tmp_path / "w.h5", "a character device, not a weights file"
        path.symlink_to("/dev/zero")
    err = _refused(capsys, tmp_path, path, needle)
    assert "not found" not in err


@pytest.mark.parametrize("kind", ["folder", "fifo", "/dev/zero", "huge"])
def test_classes_must_be_a_regular_file_of_bounded_size(tmp_path, capsys, kind):
    classes = tmp_path / "classes.txt"
    if kind == "folder":
        classes.mkdir()
        needle = "a folder"
    elif kind == "fifo":
        os.mkfifo(classes)
        needle = "a FIFO (named pipe)"
    elif kind == "huge":
        with open(classes, "wb") as f:
            f.truncate(32 << 20)  # sparse: no disk used
        needle = "holds more than"
    else:
        classes = Path(kind)
        needle = "a character device"
    _refused(capsys, tmp_path, FIXTURE, needle, "--classes", classes)
