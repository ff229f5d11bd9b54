"""Decoding any image Pillow reads into 8-bit RGB (or L), with EXIF orientation applied.

Used by training, evaluation, prediction and the packed runtime alike, so every backend
sees the same pixels. Needs Pillow and NumPy only.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bnncli.errors import DataError

_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale to 8-bit L, keeping the full range visible."""
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64))
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255)
    else:
        arr = arr.astype(np.float64)
        # 16-bit sources (PNG I;16, or I holding 16-bit data) span 0..65535.
        top = 65535.0 if (img.mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(arr, 0, top) * (255.0 / top)
    return Image.fromarray(np.rint(arr).astype(np.uint8))  # 2-D uint8 -> mode L


def load_image(path: str | os.PathLike, channels: int = 3) -> Image.Image:
    """Open ``path`` as an 8-bit RGB (``channels=3``) or L (``channels=1``) image.

    Raises :class:`DataError` with one line naming the file when it cannot be decoded
    (missing, not an image, truncated, or a decompression bomb).
    """
    if channels not in (1, 3):
        raise DataError(f"images can be read with 1 or 3 channels, not {channels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode now, so a truncated file fails here and not later
                img = ImageOps.exif_transpose(img)
                if img.mode in _HIGH_DEPTH_MODES:
                    img = _to_8bit(img)
                elif img.mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                return img.convert("RGB" if channels == 3 else "L")
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an image") from None
    except UnidentifiedImageError:
        raise DataError(f"cannot read {path}: not an image format Pillow knows") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read {path}: {reason}") from None
