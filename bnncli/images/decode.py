"""Decoding any image Pillow reads into 8-bit RGB (or L), with EXIF orientation applied.

Used by training, evaluation, prediction and the packed runtime alike, so every backend
sees the same pixels. Needs Pillow and NumPy only.

What is refused before anything is decoded, so that no file can hang a reader or exhaust memory:

* anything but a regular file (a FIFO, socket, device or folder): never opened, since reading a
  FIFO or a terminal blocks forever;
* an image whose header claims more than :data:`MAX_PIXELS` pixels once decoded (JPEGs above
  :data:`DRAFT_PIXELS` are decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder itself, so a big
  photo costs at most about 50 MB). Pillow's own decompression-bomb limit is an error too. How
  elongated an image may be is not limited here: what matters is the pixels a resize for the
  model would produce, which preprocessing bounds (bnncli.images.preprocess.check_resize);
* a JPEG of more than :data:`MAX_JPEG_SCANS` scans: a progressive JPEG decodes every scan over
  the whole image, so a 1 MB file of 20,000 tiny repeated scans takes minutes. Scans are counted
  from the file's bytes before decoding (each starts with an SOS marker, ``FF DA``, which
  entropy-coded data never contains), for Pillow and for the tensor loaders' decoders alike.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bnncli.errors import DataError
from bnncli.fileio import open_regular

_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_PIXELS = 8192 * 8192  # decoded pixels (about 200 MB in RGB, 270 MB in RGBA)
DRAFT_PIXELS = 4096 * 4096  # JPEGs above this are decoded at a reduced scale
# Scans a JPEG may have: libjpeg's progressive modes write about 10, one per component and
# band of coefficients; baseline JPEGs have 1 (or 3 non-interleaved).
MAX_JPEG_SCANS = 100
JPEG_SOI = b"\xff\xd8"
_SOS = b"\xff\xda"


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale to 8-bit L, keeping the full range visible."""
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64))
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255)
    else:
        # float32 in place: one copy of the image, and the same bytes as float64 would give (the
        # products of 0..65535 and 255/65535 are never within float32 rounding of a .5 tie).
        arr = arr.astype(np.float32)
        # 16-bit sources (PNG I;16, or I holding 16-bit data) span 0..65535.
        top = 65535.0 if (img.mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        np.clip(arr, 0, top, out=arr)
        arr *= np.float32(255.0 / top)
    return Image.fromarray(np.rint(arr).astype(np.uint8))  # 2-D uint8 -> mode L


def _open_regular(path: str | os.PathLike):
    """``path`` opened for binary reading if it is a regular file (bnncli.fileio.open_regular); DataError if not."""
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder, not an image")
    if not os.path.lexists(path):
        raise DataError(f"image not found: {path}")
    return open_regular(path, "image file", DataError)


def jpeg_scans(data: bytes) -> int:
    """The scans of the JPEG ``data`` (its SOS markers)."""
    return data.count(_SOS)


def _count_scans(f, chunk: int = 1 << 20) -> int:
    """The SOS markers from ``f``'s start, read in chunks (stops counting past the limit); the
    position of ``f`` is restored."""
    here, count, tail = f.tell(), 0, b""
    f.seek(0)
    try:
        while count <= MAX_JPEG_SCANS:
            block = f.read(chunk)
            if not block:
                break
            count += (tail + block).count(_SOS) - tail.count(_SOS)
            tail = block[-1:]
    finally:
        f.seek(here)
    return count


def check_scans(count: int, path: str | os.PathLike) -> None:
    if count > MAX_JPEG_SCANS:
        raise DataError(f"cannot read {path}: a JPEG of more than {MAX_JPEG_SCANS} scans (progressive "
                        f"JPEGs have about 10), which would take minutes to decode")


def read_image_bytes(path: str | os.PathLike, limit: int) -> bytes | None:
    """The bytes of the image file ``path``, for a decoder other than Pillow; None when the file
    holds more than ``limit`` bytes. Opened as :func:`load_image` opens it (regular files only);
    DataError, one line naming the file, when it cannot be read or is a JPEG of too many scans."""
    try:
        with _open_regular(path) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > limit:
        return None
    if data.startswith(JPEG_SOI):
        check_scans(jpeg_scans(data), path)
    return data


def check_size(img: Image.Image, path: str | os.PathLike) -> None:
    """Refuse, from the header alone, an image too large to decode, or a JPEG of too many scans."""
    w, h = img.size
    if w < 1 or h < 1:
        raise DataError(f"cannot read {path}: the image is {w}x{h} pixels")
    if w * h > MAX_PIXELS:
        raise DataError(f"cannot read {path}: {w}x{h} pixels is more than the {MAX_PIXELS:,} pixels "
                        "(8192x8192) bnncli decodes")
    fp = getattr(img, "fp", None)
    if img.format in ("JPEG", "MPO") and fp is not None:
        check_scans(_count_scans(fp), path)


def _draft(img: Image.Image) -> None:
    """Let the JPEG decoder scale a large JPEG down by 2, 4 or 8 while decoding (no-op for others)."""
    w, h = img.size
    if img.format not in ("JPEG", "MPO") or w * h <= DRAFT_PIXELS:
        return
    scale = next(s for s in (2, 4, 8) if (w // s) * (h // s) <= DRAFT_PIXELS or s == 8)
    img.draft(None, (max(1, w // scale), max(1, h // scale)))


def load_image(path: str | os.PathLike, channels: int = 3) -> Image.Image:
    """Open ``path`` as an 8-bit RGB (``channels=3``) or L (``channels=1``) image.

    Raises :class:`DataError` with one line naming the file when it cannot be decoded
    (missing, not a regular file, not an image, truncated, too large for the bounds above,
    a JPEG of too many scans, or a decompression bomb).
    """
    if channels not in (1, 3):
        raise DataError(f"images can be read with 1 or 3 channels, not {channels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_regular(path) as f, Image.open(f) as img:
                _draft(img)
                check_size(img, path)
                img.load()  # decode now, so a truncated file fails here and not later
                img = ImageOps.exif_transpose(img)
                if img.mode in _HIGH_DEPTH_MODES:
                    img = _to_8bit(img)
                elif img.mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                return img.convert("RGB" if channels == 3 else "L")
    except UnidentifiedImageError:
        raise DataError(f"cannot read {path}: not an image format Pillow knows") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read {path}: {reason}") from None
