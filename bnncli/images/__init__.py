"""Images in and labels out: decoding with bounds, the preprocessing presets, ImageNet class names.

* :mod:`bnncli.images.decode`: open and decode one image file safely (:func:`load_image`);
* :mod:`bnncli.images.preprocess`: resize, crop and normalise as a model's preprocessing record says;
* :mod:`bnncli.images.labels`: readable names for ImageNet synset ids.

Imports NumPy and Pillow only: the training data pipeline, ``bnn predict`` and the packed runtime
all read images through here.
"""

from __future__ import annotations

from bnncli.images.decode import load_image
from bnncli.images.preprocess import preprocess_file, preprocess_files, preprocess_image

__all__ = ["load_image", "preprocess_file", "preprocess_files", "preprocess_image"]
