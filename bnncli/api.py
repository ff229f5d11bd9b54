"""bnncli's Python API: the functions docs/api.md documents, also importable from ``bnncli`` itself.

    import bnncli
    model = bnncli.create_model("binarydensenet28", num_classes=10)
    bnncli.save(model, "my.pt", class_names=[...], preprocessing=bnncli.preprocessing("small", 32))
    bnncli.pack("my.pt", "my.bnn")
    predictor = bnncli.open_model("my.bnn", threads=1)

Every function here is a thin, documented entry to the library layer that does the work (the
registry, checkpoints, the training loop, deployment, the inference seam); the CLI calls the
same layers. Heavy modules (torch) are imported inside the functions, so importing this module,
or ``bnncli``, stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from bnncli.deploy.export import ExportResult
    from bnncli.deploy.pack import PackResult
    from bnncli.engine.config import TrainConfig
    from bnncli.engine.progress import Reporter
    from bnncli.engine.train import TrainResult

__all__ = ["create_model", "evaluate", "export", "load", "pack", "sample_images", "save", "train"]


def create_model(name: str, *, checkpoint: str | os.PathLike | None = None, **options: Any) -> nn.Module:
    """A registered model (``list_models()``), in train mode, freshly initialised or with the weights
    of ``checkpoint`` (a ``.pt`` file or a run directory) -- as in timm.

    ``options`` are the model's options (``model_options(name)``: ``num_classes``, ``in_channels``,
    ``clip_threshold``, ...); unset ones come from the checkpoint when there is one, else from the
    model's defaults. UsageError for an unknown name or option (with close matches), ArtifactError
    when the checkpoint holds another architecture or weights that do not fit.
    """
    from bnncli.models import LEGACY_OPTIONS
    from bnncli.models import create_model as create

    if checkpoint is None:
        return create(name, **options)
    from bnncli.artifacts.checkpoint import load_checkpoint
    from bnncli.artifacts.identify import reason
    from bnncli.artifacts.rundir import resolve_model_path
    from bnncli.errors import ArtifactError

    path = resolve_model_path(checkpoint, what="checkpoint")
    ckpt = load_checkpoint(path)
    if ckpt["arch"] != name:
        raise ArtifactError(f"{path} holds a {ckpt['arch']}, not a {name}")
    model = create(name, **{**LEGACY_OPTIONS, **ckpt["arch_kwargs"], **options})
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ArtifactError(f"the weights of {path} do not fit {name} with these options: {reason(e)}") from None
    return model


def save(model: nn.Module, path: str | os.PathLike, *, class_names: list[str],
         preprocessing: dict[str, Any]) -> Path:
    """Write ``model`` as a bnncli checkpoint (atomically): a registry model by name and options, any
    other model of bnncli's and torch's layers with its architecture recorded as data (docs/api.md
    lists what it may hold), so :func:`load`, ``bnn eval``, ``bnn export`` and ``bnn pack`` rebuild
    it without its Python class. ``class_names``: in output order; ``preprocessing``: how images
    become its input (:func:`bnncli.preprocessing`). ArtifactError names a layer it cannot record."""
    from bnncli.artifacts.checkpoint import model_checkpoint, save_checkpoint
    from bnncli.metadata import check_preprocessing

    names = list(class_names)
    try:
        check_preprocessing(preprocessing)
    except Exception as e:
        from bnncli.errors import UsageError

        raise UsageError(f"preprocessing: {e} (make one with bnncli.preprocessing)") from None
    return save_checkpoint(path, model_checkpoint(model, names, preprocessing))


def load(path: str | os.PathLike) -> nn.Module:
    """The model of a checkpoint or run directory, with its weights, on the CPU in eval mode
    (a registry model, or an ``fx.GraphModule`` rebuilt from its recorded architecture). Its class
    names and preprocessing: ``open_model(path).class_names`` / ``.preprocessing``."""
    from bnncli.artifacts.checkpoint import open_checkpoint

    return open_checkpoint(path).model


def train(config: TrainConfig | dict[str, Any] | None = None, *, out: str | os.PathLike | None = None,
          recipe: str | os.PathLike | None = None, reporter: Reporter | None = None,
          **options: Any) -> TrainResult:
    """Run ``bnn train``'s loop: the defaults, then ``config`` (a TrainConfig or a dict of its
    fields), then ``recipe`` (a TOML file), then ``options`` (TrainConfig fields: ``arch``,
    ``data``, ``epochs``, ...; None leaves a value as it is). Writes the run directory ``out``
    (default ``runs/<arch>-<time>``: last.pt, best.pt, metrics.jsonl) and returns a TrainResult
    (``run_dir``, ``history``, ``best``, ``model``). ``reporter`` receives progress (default: none;
    warnings go to the ``bnncli`` logger)."""
    from bnncli.engine.config import TrainConfig, resolve_config
    from bnncli.engine.train import train as run

    base = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    cfg = resolve_config(base=base, recipe=recipe, overrides=options)
    return run(cfg, out, reporter=reporter)


def evaluate(model: str | os.PathLike, data: str, *, batch_size: int = 64, device: str = "auto",
             threads: int | None = None, backend: str | None = None, **options: Any) -> dict[str, Any]:
    """``bnn eval``: top-1, top-5, loss, per-class accuracy and speed of any model file (checkpoint,
    run directory, ONNX, packed) on labelled images (a folder, or ``builtin:shapes``). Returns a
    dict of fractions in [0, 1] and counts (see ``bnn eval --json``). ``options``: ``amp``,
    ``channels_last``, ``workers`` of bnncli.engine.evaluate.evaluate_model_file."""
    from bnncli.engine.evaluate import evaluate_model_file

    return evaluate_model_file(model, data, batch_size=batch_size, device=device, threads=threads,
                               backend=backend, **options)


def export(checkpoint: str | os.PathLike, output: str | os.PathLike, **options: Any) -> ExportResult:
    """``bnn export``: a checkpoint (of any model :func:`save` wrote) to ONNX, verified against
    PyTorch with onnxruntime before it is written. ``options``: ``samples``, ``tolerance``, ``threads``."""
    from bnncli.deploy.export import export_onnx

    return export_onnx(checkpoint, output, **options)


def pack(checkpoint: str | os.PathLike, output: str | os.PathLike, *, float_dtype: str = "auto",
         **options: Any) -> PackResult:
    """``bnn pack``: a checkpoint to one packed file (1-bit binary weights; ``float_dtype`` float32,
    float16, or auto: float16 when lossless, else float32, for the full-precision layers), verified
    by running the packed bytes against PyTorch before it is written. ``options``: ``samples``,
    ``tolerance``, ``threads``."""
    from bnncli.deploy.pack import pack_model

    return pack_model(checkpoint, output, float_dtype=float_dtype, **options)


def sample_images(directory: str | os.PathLike, count: int = 10, dataset: str = "shapes",
                  split: str = "val") -> list[Path]:
    """Write ``count`` images of a built-in dataset as PNG files (``<index>-<class>.png``) into
    ``directory`` (created if needed) and return their paths: something to try ``bnn predict`` on."""
    from bnncli.data.builtin import write_samples

    return write_samples(directory, count, dataset, split)
