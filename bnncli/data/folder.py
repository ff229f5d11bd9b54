"""Image folders in the ImageNet layout: ``ROOT/<class>/<image>``, class names from folder names.

Scanning and decoding only (Pillow and the standard library): no torch here, so the packed
runtime and ``bnn predict`` can reuse the layout rules. Every file is decoded through
:func:`bnncli.images.decode.load_image`, the decoder all backends share; it never opens what is
not a regular file (a FIFO, socket or device in the folder is skipped as unreadable).

Symlinks: split and class folders may be links, and so may image files; links to folders below a
class folder are not followed, and a class folder that leads back to the data folder or above it
is an error. Every scan is therefore finite and stays inside the class folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from bnncli.errors import DataError
from bnncli.images.decode import load_image

# Every extension a Pillow plugin claims (.jpg, .jpeg, .png, .tif, .webp, .bmp, ...). A file with
# another extension (labels.txt, .DS_Store) is not an image and is ignored rather than "unreadable".
IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in Image.registered_extensions())
VAL_SPLIT_NAMES = ("val", "validation")
DEFAULT_VAL_SPLIT = 0.1  # of a single folder of classes, held out for validation (bnn train --val-split)


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_folder(path: str | os.PathLike | os.DirEntry) -> bool:
    """Whether ``path`` is a folder (a link to one included); False for what cannot be asked,
    such as a link whose target's name is longer than the system allows (which raises on 3.11)."""
    try:
        return path.is_dir() if isinstance(path, os.DirEntry) else os.path.isdir(path)
    except (OSError, ValueError):
        return False


def class_folders(root: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``root`` (a symlink to a folder counts as one).

    A class folder that is, or links to, ``root`` itself or a folder above it would make the scan
    read the data folder again (or the whole disk, for a link to ``/``): DataError.
    """
    try:
        entries = sorted(e.name for e in os.scandir(root) if not e.name.startswith(".") and is_folder(e))
    except OSError as e:
        raise DataError(f"cannot list {root}: {e.strerror or e}") from None
    above = _folders_up_from(root)
    for name in entries:
        st = os.stat(root / name)
        if (st.st_dev, st.st_ino) in above:
            raise DataError(f"class folder {root / name} links to {above[st.st_dev, st.st_ino]}, which holds the "
                            "data folder itself")
    return entries


def _folders_up_from(root: Path) -> dict[tuple[int, int], Path]:
    """``(st_dev, st_ino) -> path`` of ``root`` and every folder above it."""
    here = root.resolve()
    found = {}
    for folder in (here, *here.parents):
        st = os.stat(folder)
        found[st.st_dev, st.st_ino] = folder
    return found


def images_under(folder: Path) -> list[str]:
    """Image files below ``folder`` (sub-folders included, hidden ones and other files skipped), sorted,
    as paths: a class folder's images, or the images ``bnn predict DIR`` classifies.

    Symlinks: ``folder`` itself may be one (class folders linked from elsewhere), and links to
    files are read as the files they point to; links to folders *below* a class folder are not
    followed, so no arrangement of links can make the scan loop or leave the class folder.
    """
    found: list[str] = []
    pending = [os.fspath(folder)]  # a stack, not recursion: any depth of folders (os.walk recurses on 3.11)
    while pending:
        here = pending.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # unreadable, vanished, or a path beyond the system's length limit: skipped
            continue
        below = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if is_folder(e):
                if not e.is_symlink():  # a link to a folder below a class folder is not followed
                    below.append(e.path)
            elif is_image_file(e.name):
                found.append(e.path)
        pending.extend(reversed(below))  # depth first, sub-folders by name: os.walk's order
    return found


class ImageFolderDataset:
    """One split folder: ``dataset.load(i) -> (PIL image, label)``.

    ``classes`` fixes the label of each class name (the training split's classes, for a
    validation split); a folder named after no known class is an error, a known class
    without a folder is fine.
    """

    def __init__(self, root: str | os.PathLike, classes: list[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"data folder not found: {self.root}")
        folders = class_folders(self.root)
        if not folders:
            raise DataError(f"no class folders in {self.root}: expected {self.root}/<class>/<image files>")
        self.classes = list(classes) if classes is not None else folders
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise DataError(
                f"{self.root} has class folders the model does not know: {', '.join(unknown[:5])}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        self.samples: list[tuple[str, int]] = []
        for name in folders:
            self.samples.extend((path, index[name]) for path in images_under(self.root / name))
        if not self.samples:
            raise DataError(f"no images found in {self.root} (looked for {', '.join(sorted(_COMMON))} and more)")
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        return self.samples[index][0]

    def load(self, index: int, channels: int = 3) -> tuple[Image.Image, int]:
        """Decode image ``index``; raises :class:`DataError` (one line, naming the file) if unreadable."""
        path, label = self.samples[index]
        return load_image(path, channels=channels), label


_COMMON = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif")


def split_folders(root: str | os.PathLike) -> tuple[Path | None, Path | None]:
    """``(train, val)`` folders of a dataset root.

    ``ROOT/train`` and ``ROOT/val`` (or ``ROOT/validation``) in the ImageNet layout; a root
    without them is a single split folder, returned as ``(root, None)``.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"--data must be a folder (or builtin:NAME), not a file: {root}")
    val = next((root / n for n in VAL_SPLIT_NAMES if (root / n).is_dir()), None)
    if (root / "train").is_dir():
        return root / "train", val
    if val is not None:
        return None, val
    return root, None
