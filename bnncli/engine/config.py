"""Training configuration: defaults < recipe file < command line.

A recipe (``pipelines/*.toml``) is a flat TOML table whose keys are :class:`TrainConfig` fields,
plus a ``[model]`` table of model options (``clip_threshold``, ``scaling``, ...) and an optional
``[reference]`` table of the numbers the experiment should reproduce (kept for the record, never
used). Unset command-line options are ``None`` and never override the recipe.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnncli.errors import UsageError
from bnncli.fileio import read_regular_text
from bnncli.metadata import MAX_IMAGE_SIZE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPTIMIZERS = ("adam", "radam", "sgd")
SCHEDULES = ("cosine", "step", "linear", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("none", "bf16", "fp16")
INITS = ("default", "he_normal")
# How training images are decoded and augmented (bnncli.data.tensor_loaders): Pillow in the workers,
# libjpeg-turbo and uint8 tensors in the workers, or file bytes in the workers and the rest on the device.
LOADERS = ("pil", "torchvision", "device")
# Bounds of the numeric options (see validate): beyond them a value is a typo or an attack, not a recipe.
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_LR = 10.0
MIN_IMAGE_SIZE = 8
MAX_VAL_SPLIT = 0.9  # of a single folder: at least one image per class stays for training anyway
MODEL_OPTIONS = ("in_channels", "thumbnail", "clip_threshold", "pad_value", "scaling", "activation_gradient",
                 "weight_gradient", "binary_downsample", "float_weights", "padding")


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (paths and display aside).

    Defaults follow the paper: Adam, no weight decay, latent weight clipping (the model's Larq
    weight variant), training from scratch.
    """

    arch: str | None = None
    data: str | None = None
    # Fraction of a single folder of classes held out for validation (stratified, by seed); None: 0.1
    # there. A dataset with its own val split (and builtin:) keeps it. Resolved when the data opens.
    val_split: float | None = None
    epochs: int = 10
    batch_size: int = 64  # global: divided across processes under torchrun
    lr: float = 4e-3  # Larq Zoo's rate for BinaryDenseNet28, the reproduction of the paper
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"
    steps: list[int] = field(default_factory=list)  # epochs where the step schedule multiplies by factor
    factor: float = 0.1
    warmup_epochs: float = 0.0
    image_size: int | None = None  # None: the built-in dataset's size, else 224
    preset: str | None = None  # None: small below 64 px, imagenet from 64 px
    # Training augmentation (bnncli.data.transforms.Augmentation); None: the preset's, the paper's.
    augment: bool = True
    flip: float | None = None  # horizontal flip probability; None: 0.5
    crop_scale: list[float] | None = None  # random-resized crop area range; None: [0.08, 1.0]
    crop_ratio: list[float] | None = None  # its aspect range; None: [3/4, 4/3]
    pad_crop: int | None = None  # small preset: pad-and-crop margin in px; None: image_size // 8
    label_smoothing: float = 0.0
    init: str = "default"  # or he_normal (the authors' 2019 ablation protocol)
    workers: int | None = None  # None: 0 on CPU, up to 8 per GPU process
    threads: int | None = None  # PyTorch's CPU threads per process; None: bnncli.nn.threads.use_torch_threads
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    loader: str = "pil"  # one of LOADERS; validation always reads with pil (the transform bnn eval uses)
    model: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    reference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}


def _type_name(f: dataclasses.Field) -> str:
    t = str(f.type)
    for name in ("bool", "int", "float", "str"):
        if t.startswith(name):
            return name
    return "list" if t.startswith("list") else "dict"


def _check_value(key: str, value: Any, where: str) -> Any:
    f = FIELDS[key]
    kind = _type_name(f)
    if value is None:
        return value
    if kind == "list":
        number = (int, float) if "list[float]" in str(f.type) else int
        ok = isinstance(value, list) and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
    elif kind == "dict":
        ok = isinstance(value, dict)
    elif kind in ("int", "float"):
        ok = isinstance(value, _TYPES[kind]) and not isinstance(value, bool)
    else:
        ok = isinstance(value, _TYPES[kind])
    if not ok:
        numbers = "a list of numbers" if "list[float]" in str(f.type) else "a list of integers"
        want = {"list": numbers, "dict": "a table", "int": "an integer", "float": "a number",
                "str": "a string", "bool": "true or false"}[kind]
        raise UsageError(f"{where}: {key} must be {want}, not {value!r}")
    return float(value) if kind == "float" else value


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a recipe file; returns the fields it sets."""
    path = Path(path)
    text = read_regular_text(path, what="recipe")  # a regular file of at most 16 MiB: never a FIFO or device
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise UsageError(f"recipe {path} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise UsageError(f"recipe {path}: unknown key {', '.join(unknown)}; known keys: {', '.join(FIELDS)}")
    recipe = {k: _check_value(k, v, f"recipe {path}") for k, v in raw.items()}
    bad = sorted(set(recipe.get("model", {})) - set(MODEL_OPTIONS))
    if bad:
        raise UsageError(f"recipe {path}: unknown model option {', '.join(bad)}; known: {', '.join(MODEL_OPTIONS)}")
    return recipe


def resolve_config(base: dict[str, Any] | None = None, recipe: str | os.PathLike | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then ``base`` (a resumed run's config), then the recipe, then ``overrides``
    (the command line; ``None`` values are dropped). Model options merge key by key."""
    merged: dict[str, Any] = TrainConfig().to_dict()
    layers = [base or {}]
    if recipe is not None:
        layers.append(load_recipe(recipe))
    layers.append({k: v for k, v in (overrides or {}).items() if v is not None})
    for layer in layers:
        for key, value in layer.items():
            if key not in FIELDS:
                raise UsageError(f"unknown training option {key!r}")
            value = _check_value(key, value, "options")
            if key == "model":
                merged["model"] = {**merged["model"], **{k: v for k, v in value.items() if v is not None}}
            else:
                merged[key] = value
    cfg = TrainConfig(**merged)
    validate(cfg)
    return cfg


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def validate(cfg: TrainConfig) -> None:
    if not cfg.arch:
        raise UsageError("no model: pass --arch NAME (see `bnn models`) or a --recipe that sets arch")
    if not cfg.data:
        raise UsageError("no data: pass --data DIR (ImageNet layout) or --data builtin:shapes")
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("schedule", cfg.schedule, SCHEDULES)
    _choice("device", cfg.device, DEVICES)
    _choice("autocast mode", cfg.amp, AMP_MODES)
    _choice("init", cfg.init, INITS)
    _choice("loader", cfg.loader, LOADERS)
    if cfg.preset is not None:
        from bnncli.data.presets import PRESETS

        _choice("preset", cfg.preset, PRESETS)
    _check_ranges(cfg)
    if cfg.threads is not None and not (isinstance(cfg.threads, int) and 1 <= cfg.threads <= 4096):
        raise UsageError(f"threads must be an integer from 1 to 4096, not {cfg.threads!r}")
    if cfg.workers is not None and cfg.workers < 0:
        raise UsageError(f"workers cannot be negative, not {cfg.workers}")
    _check_model_options(cfg.arch, cfg.model)


def _in_range(name: str, value: float, low: float, high: float, *, low_open: bool = False,
              high_open: bool = False) -> None:
    """``value`` must be a finite number in the range; otherwise one line naming the option and the range."""
    finite = not isinstance(value, float) or math.isfinite(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (finite and above and below):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise UsageError(f"{name} must be in {lo}{_num(low)}, {_num(high)}{hi}, not {value!r}")


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _check_ranges(cfg: TrainConfig) -> None:
    """Every number within what a run can use (NaN, infinities and absurd sizes are refused here)."""
    _in_range("epochs", cfg.epochs, 1, MAX_EPOCHS)
    _in_range("batch size", cfg.batch_size, 1, MAX_BATCH)
    _in_range("learning rate", cfg.lr, 0, MAX_LR, low_open=True)
    _in_range("weight decay", cfg.weight_decay, 0, 1)
    _in_range("momentum", cfg.momentum, 0, 1, high_open=True)
    _in_range("warmup epochs", cfg.warmup_epochs, 0, MAX_EPOCHS)
    _in_range("the step schedule's factor", cfg.factor, 0, 1, low_open=True)
    if cfg.steps != sorted(cfg.steps) or any(not 1 <= s <= MAX_EPOCHS for s in cfg.steps):
        raise UsageError(f"schedule steps must be increasing epoch numbers, not {cfg.steps}")
    if cfg.image_size is not None:
        _in_range("image size", cfg.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    if cfg.val_split is not None:
        _in_range("val split", cfg.val_split, 0, MAX_VAL_SPLIT)
    _check_augmentation(cfg)
    if not -(2**63) <= cfg.seed < 2**63:
        shown = str(cfg.seed) if len(str(cfg.seed)) <= 40 else f"a {len(str(abs(cfg.seed)))}-digit number"
        raise UsageError(f"seed must be a 64-bit signed integer (from -2**63 to 2**63 - 1), not {shown}")


def _check_augmentation(cfg: TrainConfig) -> None:
    if cfg.flip is not None:
        _in_range("flip probability", cfg.flip, 0, 1)
    for name, pair, high in (("crop scale", cfg.crop_scale, 1), ("crop ratio", cfg.crop_ratio, 100)):
        if pair is None:
            continue
        if len(pair) != 2 or not all(math.isfinite(v) and 0 < v <= high for v in pair) or pair[0] > pair[1]:
            raise UsageError(f"{name} must be two numbers MIN <= MAX in (0, {high}], not {pair}")
    if cfg.pad_crop is not None:
        _in_range("pad-crop margin", cfg.pad_crop, 0, MAX_IMAGE_SIZE)
    _in_range("label smoothing", cfg.label_smoothing, 0, 1, high_open=True)


def augmentation(cfg: TrainConfig):
    """The run's training augmentation (bnncli.data.transforms.Augmentation)."""
    from bnncli.data.transforms import Augmentation

    def pair(v: list[float] | None) -> tuple[float, float] | None:
        return None if v is None else (float(v[0]), float(v[1]))

    return Augmentation(cfg.augment, cfg.flip, pair(cfg.crop_scale), pair(cfg.crop_ratio), cfg.pad_crop)


def _check_model_options(arch: str, options: dict[str, Any]) -> None:
    """Model options must exist for ``arch`` and have the type of their default."""
    if "bnncli.models._registry" not in sys.modules:  # nothing registered beyond the zoo: check without torch
        from bnncli.models.zoo import ZOO

        if arch not in ZOO:
            import difflib

            close = difflib.get_close_matches(arch, list(ZOO), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(ZOO)}"
            raise UsageError(f"unknown model {arch!r}{hint}")
    from bnncli.models import model_options

    defaults = model_options(arch)  # an unknown arch raises here, with close matches
    for key, value in options.items():
        if key not in defaults:
            raise UsageError(f"model {arch!r} has no option {key}; its options: {', '.join(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise UsageError(f"model option {key} of {arch} must be like {default!r}, not {value!r}")


def parse_steps(text: str | None) -> list[int] | None:
    """``"100,110"`` -> ``[100, 110]`` for ``--steps``."""
    if text is None:
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UsageError(f"--steps takes comma-separated epoch numbers like 100,110, not {text!r}") from None


def parse_out_dir(text: str) -> Path:
    """``--out DIR`` for ``bnn train``: a path, not an empty string (which would mean the current directory)."""
    if not str(text).strip():
        raise UsageError("--out needs a directory name, not an empty string")
    return Path(text)
