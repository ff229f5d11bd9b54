"""The training loaders of ``bnn train --loader``: ``pil`` (the default), ``torchvision`` and ``device``.

- ``pil``: :class:`~bnncli.data.loading.SampleDataset` in DataLoader workers: Pillow decodes, the
  torchvision transform augments PIL images and normalises them to float tensors.
- ``torchvision``: the workers decode JPEGs with ``torchvision.io.decode_jpeg`` (libjpeg-turbo) and
  crop, resize and flip uint8 tensors; the uint8 batch goes to the device, where it is normalised.
  A quarter of the bytes of a float batch cross from the workers and to the GPU.
- ``device``: the workers only read file bytes (and parse the JPEG header for the image size);
  the main process decodes the whole batch on the training device (nvJPEG on CUDA, batched; the
  same call on the CPU, where it is libjpeg-turbo) and crops, resizes, flips and normalises there.

What the tensor loaders leave to Pillow, in the worker, exactly as the ``pil`` loader reads it
(:func:`bnncli.images.decode.load_image`): every file that is not a plain JPEG (PNG, WebP, ...),
CMYK JPEGs, JPEGs with an EXIF orientation, JPEGs above ``DRAFT_PIXELS`` (decoded reduced), and the
images of built-in datasets, which are drawn in memory (they have no file to decode). A file that no
decoder reads is skipped and counted, as with ``pil``.

Reproducibility: each sample's crop and flip are drawn by the same torchvision transform objects
(``train_transform``) from the same generator as the ``pil`` loader's: the CPU generator seeded with
the sample's seed (:meth:`~bnncli.data.loading.EpochSampler.sample_seed`), in the same order, for an
image of the same size. The same seed therefore gives the same boxes and flips with every loader,
and a resumed run sees exactly the batches of an uninterrupted one. The pixels differ slightly from
loader to loader (libjpeg-turbo or nvJPEG instead of Pillow, tensor resampling instead of Pillow's,
float instead of uint8 rounding on the device), so runs with different loaders are not bit-identical.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Sampler
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from bnncli.data.folder import ImageFolderDataset
from bnncli.data.loading import SampleDataset, Skipped, Source, Subset, make_loader, sample_rng
from bnncli.data.shm import PREFETCH
from bnncli.data.transforms import _ResizeBound
from bnncli.errors import DataError, UsageError
from bnncli.images.decode import DRAFT_PIXELS, check_size, load_image, read_image_bytes
from bnncli.images.preprocess import check_resize

EXIF_ORIENTATION = 0x0112
MAX_JPEG_BYTES = 64 << 20  # a larger file goes to Pillow, which reads its header before anything else


# ---- the transform, replayed on tensors ------------------------------------------------------------------------

# One step of a sample's geometry, drawn once (in a worker) and applied to the decoded image:
# ("crop_resize", top, left, h, w, out_h, out_w) | ("resize", h, w) | ("pad", margin) |
# ("crop", top, left, h, w) | ("flip",)
Op = tuple


class TensorTransform:
    """A ``train_transform`` / ``eval_transform`` Compose (PIL steps), replayed on CHW tensors.

    :meth:`draw` makes the random draws the Compose would make for an image of a given size, with
    the transform objects' own ``get_params`` and in the same order, so that under the same seed a
    tensor loader crops and flips exactly as the ``pil`` loader does; :meth:`apply` does the
    geometry on a tensor of any dtype and device. Normalisation is done on whole batches (:meth:`constants`).
    A step it cannot replay is a UsageError naming ``--loader pil``.
    """

    def __init__(self, transform: Callable) -> None:
        steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
        self.steps: list[Any] = []
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        for step in steps:
            if isinstance(step, T.Normalize):
                self.mean, self.std = [float(v) for v in step.mean], [float(v) for v in step.std]
            elif isinstance(step, T.ToTensor):
                continue
            elif self._replayable(step):
                self.steps.append(step)
            else:
                raise UsageError(f"the tensor loaders (--loader torchvision, device) cannot replay the "
                                 f"{type(step).__name__} step of this preprocessing (the larq preset's "
                                 f"TensorFlow-bicubic resize, with --no-augment); use --loader pil")
        if self.mean is None or self.std is None:
            raise UsageError("the tensor loaders need a preprocessing that ends with a normalisation; use --loader pil")

    @staticmethod
    def _replayable(step: Any) -> bool:
        bilinear = getattr(step, "interpolation", InterpolationMode.BILINEAR) == InterpolationMode.BILINEAR
        if isinstance(step, T.RandomResizedCrop):
            return bilinear and step.antialias is not False
        if isinstance(step, T.Resize):
            one_side = isinstance(step.size, int) or len(step.size) == 1
            return bilinear and step.antialias is not False and one_side and step.max_size is None
        if isinstance(step, T.RandomCrop):
            padding_ok = step.padding is None or isinstance(step.padding, int)
            return padding_ok and not step.pad_if_needed and step.fill == 0 and step.padding_mode == "constant"
        return isinstance(step, (T.CenterCrop, T.RandomHorizontalFlip, _ResizeBound))

    def draw(self, height: int, width: int) -> tuple[Op, ...]:
        """The geometry of one image of ``height`` x ``width``, drawn from the global CPU generator
        (seed it first, as :class:`~bnncli.data.loading.SampleDataset` does). DataError when the
        preprocessing refuses the image (the eval resize bound)."""
        h, w = height, width
        ops: list[Op] = []
        for step in self.steps:
            if isinstance(step, _ResizeBound):
                check_resize(w, h, step.resize)
            elif isinstance(step, T.RandomResizedCrop):
                top, left, ch, cw = step.get_params(_shaped(h, w), step.scale, step.ratio)
                h, w = step.size
                ops.append(("crop_resize", top, left, ch, cw, h, w))
            elif isinstance(step, T.Resize):
                side = step.size if isinstance(step.size, int) else step.size[0]
                h, w = shorter_side_to(h, w, side)
                ops.append(("resize", h, w))
            elif isinstance(step, T.RandomCrop):
                if step.padding:
                    ops.append(("pad", step.padding))
                    h, w = h + 2 * step.padding, w + 2 * step.padding
                if h < step.size[0] or w < step.size[1]:
                    raise DataError(f"a {w}x{h} image is smaller than the {step.size[1]}x{step.size[0]} crop")
                top, left, ch, cw = step.get_params(_shaped(h, w), step.size)
                ops.append(("crop", top, left, ch, cw))
                h, w = ch, cw
            elif isinstance(step, T.CenterCrop):
                ch, cw = step.size
                if ch > h or cw > w:
                    raise DataError(f"a {w}x{h} image is smaller than the {cw}x{ch} centre crop")
                ops.append(("crop", int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0)), ch, cw))
                h, w = ch, cw
            elif isinstance(step, T.RandomHorizontalFlip):
                if torch.rand(1) < step.p:  # the draw RandomHorizontalFlip makes
                    ops.append(("flip",))
        return tuple(ops)

    def draw_seeded(self, height: int, width: int, seed: int | None) -> tuple[Op, ...]:
        with sample_rng(seed):  # seeded as the pil loader's SampleDataset is
            return self.draw(height, width)

    @staticmethod
    def apply(image: torch.Tensor, ops: tuple[Op, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        """``image`` (C x H x W) through ``ops``; resized in ``dtype`` (None: the image's own; uint8
        resizes round like Pillow's), converted before the first resize, after any first crop."""
        x = image

        def resized(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
            t = t if dtype is None else t.to(dtype)
            if tuple(t.shape[-2:]) == (h, w):
                return t
            # What torchvision's tensor Resize does (bilinear, antialiased; uint8 natively on the CPU),
            # without its dispatch: this runs once per image in the main process for --loader device.
            return torch.nn.functional.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True,
                                                   align_corners=False)[0]

        for op in ops:
            kind = op[0]
            if kind == "crop_resize":
                _, top, left, ch, cw, h, w = op
                x = resized(x[..., top:top + ch, left:left + cw], h, w)
            elif kind == "resize":
                x = resized(x, op[1], op[2])
            elif kind == "pad":
                x = torch.nn.functional.pad(x, (op[1],) * 4)
            elif kind == "crop":
                _, top, left, ch, cw = op
                x = x[..., top:top + ch, left:left + cw]
            elif kind == "flip":
                x = x.flip(-1)
            else:  # pragma: no cover
                raise AssertionError(f"unknown op {kind}")
        return x if dtype is None else x.to(dtype)

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(255 * mean, 255 * std)`` shaped (1, C, 1, 1) on ``device``: normalisation of 0..255 values."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
        return mean, std


def shorter_side_to(height: int, width: int, side: int) -> tuple[int, int]:
    """``(h, w)`` of an image resized so that its shorter side is ``side`` (torchvision's rule)."""
    if width <= height:
        return int(side * height / width), side
    return side, int(side * width / height)


def _shaped(height: int, width: int) -> torch.Tensor:
    """A tensor with an image's shape and no storage to speak of: what ``get_params`` measures."""
    return torch.empty((1, 1, 1), dtype=torch.uint8).expand(1, height, width)


# ---- reading a sample ------------------------------------------------------------------------------------------


def file_of(source: Source, index: int) -> str | None:
    """The image file behind sample ``index`` of ``source``; None for a built-in dataset."""
    while isinstance(source, Subset):
        index = source.indices[index]
        source = source.source
    if isinstance(source, ImageFolderDataset):
        return source.samples[index][0]
    return None


def jpeg_size(data: bytes, path: str) -> tuple[int, int] | None:
    """``(height, width)`` of ``data`` when it is a JPEG that libjpeg-turbo and nvJPEG decode to
    exactly what :func:`~bnncli.images.decode.load_image` gives (Y'CbCr or grayscale, no EXIF
    orientation, within the size bounds, not reduced); None: leave it to Pillow."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's own read says it
            img = Image.open(io.BytesIO(data))
        with img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return None
            width, height = img.size
            if width * height > DRAFT_PIXELS or img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                return None
            check_size(img, path)
            return height, width
    except Exception:  # unreadable header, bounds: Pillow reads the file and says what is wrong with it
        return None


def pillow_pixels(source: Source, index: int, channels: int) -> tuple[torch.Tensor, int]:
    """Sample ``index`` decoded by the ``pil`` loader's decoder, as a uint8 C x H x W tensor."""
    img, label = source.load(index, channels)
    return TF.pil_to_tensor(img), label


def _mode(channels: int) -> ImageReadMode:
    return ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY


def decode_jpegs(data: list[torch.Tensor], channels: int, device: torch.device | str = "cpu") -> list[Any]:
    """``data`` (file bytes) decoded on ``device``, batched; an image that fails gives its exception
    in its place (the batched call fails whole, so a failure is retried image by image)."""
    if not data:
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for TorchCodec's, with a warning on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            out = decode_jpeg(data, mode=_mode(channels), device=device)
            return list(out)
        except RuntimeError:
            pass
        results: list[Any] = []
        for d in data:
            try:
                results.append(decode_jpeg(d, mode=_mode(channels), device=device))
            except RuntimeError as e:
                results.append(e)
        return results


def _label(source: Source, index: int) -> int:
    return int(source.targets[index])


# ---- --loader torchvision --------------------------------------------------------------------------------------


class DecodedDataset(SampleDataset):
    """``--loader torchvision``: ``dataset[(i, seed)] -> (uint8 C x S x S tensor, label)`` or
    :class:`Skipped`; JPEGs decoded by libjpeg-turbo, everything else by Pillow, then the geometry
    on uint8 tensors (:class:`TensorTransform` of ``transform``)."""

    def __init__(self, source: Source, transform: Callable, channels: int = 3) -> None:
        super().__init__(source, transform, channels)
        self.tensor_transform = TensorTransform(transform)

    def pixels(self, index: int) -> tuple[torch.Tensor, int]:
        path = file_of(self.source, index)
        if path is not None:
            data = read_image_bytes(path, MAX_JPEG_BYTES)
            if data is not None and jpeg_size(data, path) is not None:
                decoded = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], self.channels)[0]
                if isinstance(decoded, torch.Tensor):
                    return decoded, _label(self.source, index)
        return pillow_pixels(self.source, index, self.channels)  # and the reason, when it fails too

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            image, label = self.pixels(index)
            ops = self.tensor_transform.draw_seeded(image.shape[-2], image.shape[-1], seed)
            return TensorTransform.apply(image, ops).contiguous(), label
        except DataError as e:
            return Skipped(self.source.describe(index), str(e))


class Normalized:
    """Finishes a uint8 batch ``(x, y, skipped)`` on ``device``: float, normalised, channels_last if asked."""

    def __init__(self, transform: TensorTransform, device: torch.device, channels_last: bool) -> None:
        self.device, self.channels_last = device, channels_last
        self.mean, self.std = transform.constants(device)

    def __call__(self, batch):
        x, y, skipped = batch
        if x is None:
            return batch
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # on uint8: a quarter of the bytes
        x = x.float().sub_(self.mean).div_(self.std)
        return x, y.to(self.device, non_blocking=True), skipped


# ---- --loader device -------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One sample as a worker leaves it for the device: file bytes (``jpeg``) or Pillow's pixels, and its geometry."""

    data: torch.Tensor | None  # a C x H x W uint8 image (Pillow's); None: a JPEG, its bytes in the batch's buffer
    size: tuple[int, int]  # (height, width) the geometry was drawn for
    ops: tuple[Op, ...]
    label: int
    path: str
    jpeg: bytes | None = None  # the file, until the batch is collated
    span: tuple[int, int] = (0, 0)  # where the file is in the batch's buffer


@dataclass
class EncodedBatch:
    """The samples of one batch, in order; their JPEG files end to end in ``buffer`` (one tensor, so
    one shared-memory segment crosses from the worker, not one per image); the unreadable ones."""

    samples: list[Encoded] = field(default_factory=list)
    buffer: torch.Tensor | None = None
    skipped: list[Skipped] = field(default_factory=list)

    def jpegs(self) -> list[torch.Tensor]:
        """The JPEG files, in the order of their samples (views of ``buffer``)."""
        buffer = self.buffer
        assert buffer is not None or all(s.data is not None for s in self.samples)
        return [buffer[s.span[0]:s.span[1]] for s in self.samples if s.data is None]  # type: ignore[index]


def collate_encoded(items: list) -> EncodedBatch:
    batch = EncodedBatch()
    parts, offset = [], 0
    for it in items:
        if isinstance(it, Skipped):
            batch.skipped.append(it)
            continue
        if it.jpeg is not None:
            it.span, offset = (offset, offset + len(it.jpeg)), offset + len(it.jpeg)
            parts.append(it.jpeg)
            it.jpeg = None
        batch.samples.append(it)
    batch.buffer = torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8) if parts else None
    return batch


class EncodedDataset(SampleDataset):
    """``--loader device``: ``dataset[(i, seed)] -> Encoded`` or :class:`Skipped`. A worker reads the
    file and its JPEG header and draws the sample's geometry; nothing is decoded here but what
    goes to Pillow (see the module's docstring)."""

    def __init__(self, source: Source, transform: Callable, channels: int = 3) -> None:
        super().__init__(source, transform, channels)
        self.tensor_transform = TensorTransform(transform)

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        where = self.source.describe(index)
        try:
            path = file_of(self.source, index)
            data = read_image_bytes(path, MAX_JPEG_BYTES) if path is not None else None
            size = jpeg_size(data, path) if data is not None and path is not None else None
            if size is not None:
                sample = Encoded(None, size, (), _label(self.source, index), where, jpeg=data)
            else:
                pixels, label = pillow_pixels(self.source, index, self.channels)
                sample = Encoded(pixels, (pixels.shape[-2], pixels.shape[-1]), (), label, where)
            sample.ops = self.tensor_transform.draw_seeded(*sample.size, seed)
            return sample
        except DataError as e:
            return Skipped(where, str(e))


class DeviceDecoder:
    """Finishes an :class:`EncodedBatch` on ``device``: the batch's JPEGs decoded in one call, each
    image's geometry in float32 there, then normalisation and the memory layout. Returns
    ``(x, y, skipped)`` as :func:`~bnncli.data.loading.collate` does."""

    def __init__(self, transform: TensorTransform, channels: int, device: torch.device,
                 channels_last: bool) -> None:
        self.transform, self.channels, self.device, self.channels_last = transform, channels, device, channels_last
        self.mean, self.std = transform.constants(device)

    def __call__(self, batch: EncodedBatch):
        skipped = list(batch.skipped)
        decoded = iter(decode_jpegs(batch.jpegs(), self.channels, self.device))
        images, labels = [], []
        for s in batch.samples:
            image = s.data if s.data is not None else next(decoded)
            if not isinstance(image, torch.Tensor):  # nvJPEG / libjpeg-turbo refused it: Pillow says why
                image = self._pillow(s)
                if isinstance(image, Skipped):
                    skipped.append(image)
                    continue
            images.append(self.transform.apply(image.to(self.device, non_blocking=True), s.ops, torch.float32))
            labels.append(s.label)
        if not images:
            return None, None, skipped
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = torch.empty((len(images), *images[0].shape), dtype=torch.float32, device=self.device,
                        memory_format=layout)
        for i, image in enumerate(images):
            x[i].copy_(image)
        x.sub_(self.mean).div_(self.std)
        y = torch.tensor(labels, dtype=torch.long).to(self.device, non_blocking=True)
        return x, y, skipped

    def _pillow(self, s: Encoded) -> torch.Tensor | Skipped:
        try:
            image = TF.pil_to_tensor(load_image(s.path, self.channels))
        except DataError as e:
            return Skipped(s.path, str(e))
        if tuple(image.shape[-2:]) != tuple(s.size):
            return Skipped(s.path, f"cannot read {s.path}: it changed while it was being read")
        return image


# ---- batches, one ahead ----------------------------------------------------------------------------------------


class Prefetched:
    """Batches of ``loader`` finished by ``finish`` on ``device``, one batch ahead: the next batch is
    prepared before the current one is handed out. On CUDA it is prepared on a side stream, so its
    copies and decoding overlap the current step's kernels."""

    def __init__(self, loader, finish: Callable, device: torch.device) -> None:
        self.loader, self.finish, self.device = loader, finish, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any, list[Skipped]]]:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        batches = iter(self.loader)
        ahead = self._prepare(batches, stream)
        while ahead is not None:
            current = ahead
            if stream is not None:
                main = torch.cuda.current_stream(self.device)
                main.wait_stream(stream)
                for t in current[:2]:
                    if t is not None:
                        t.record_stream(main)  # made on the side stream, used on the main one
            ahead = self._prepare(batches, stream)
            yield current

    def _prepare(self, batches: Iterator, stream):
        try:
            batch = next(batches)
        except StopIteration:
            return None
        if stream is None:
            return self.finish(batch)
        with torch.cuda.stream(stream):
            return self.finish(batch)


# ---- choosing ----------------------------------------------------------------------------------------------------


def train_dataset(loader: str, source: Source, transform: Callable, channels: int) -> SampleDataset:
    """The training dataset of ``--loader`` (bnncli.engine.config.LOADERS)."""
    kinds = {"pil": SampleDataset, "torchvision": DecodedDataset, "device": EncodedDataset}
    if loader not in kinds:
        raise UsageError(f"unknown loader {loader!r}; choose one of {', '.join(kinds)}")
    return kinds[loader](source, transform, channels)


def train_batches(dataset: SampleDataset, sampler: Sampler, batch_size: int, workers: int, device: torch.device,
                  channels_last: bool, prefetch: int = PREFETCH):
    """What the training loop iterates: ``(x, y, skipped)`` batches of ``dataset`` (of
    :func:`train_dataset`). ``pil``: the DataLoader itself (float batches on the CPU, moved by the
    step); the tensor loaders: batches finished on ``device``, one ahead (:class:`Prefetched`)."""
    pin = device.type == "cuda"
    if isinstance(dataset, DecodedDataset):
        batches = make_loader(dataset, sampler, batch_size, workers, pin_memory=pin, prefetch=prefetch)
        return Prefetched(batches, Normalized(dataset.tensor_transform, device, channels_last), device)
    if isinstance(dataset, EncodedDataset):
        batches = make_loader(dataset, sampler, batch_size, workers, collate_fn=collate_encoded, prefetch=prefetch)
        decoder = DeviceDecoder(dataset.tensor_transform, dataset.channels, device, channels_last)
        return Prefetched(batches, decoder, device)
    return make_loader(dataset, sampler, batch_size, workers, pin_memory=pin, prefetch=prefetch)
