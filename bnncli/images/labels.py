"""Readable names of the 1000 ImageNet-1k classes, keyed by WordNet synset id (torch-free).

A model trained on an ImageNet folder has synset ids (``n01440764``) as class names; predictions
show ``tench`` instead. The table pairs the 1000 ILSVRC-2012 synset ids in sorted order (the class
index order of ImageFolder and of every ImageNet checkpoint) with torchvision's category names in
the same order (``torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]``, which
disambiguates repeated WordNet lemmas such as "crane" / "crane bird"). The synset list is the
ILSVRC-2012 ``LOC_synset_mapping.txt``. The table is package data (``imagenet_classes.tsv``, read
with :mod:`importlib.resources`), generated once; no download at run time.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_SYNSET = re.compile(r"n\d{8}")

TABLE_FILE = "imagenet_classes.tsv"  # package data: "<synset id>\t<name>" per line, 1000 lines


@lru_cache(maxsize=1)
def imagenet_names() -> dict[str, str]:
    """synset id -> readable name, for the 1000 ImageNet-1k classes."""
    text = resources.files("bnncli.images").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    pairs = (line.split("\t") for line in text.splitlines() if line)
    return {synset: name for synset, name in pairs}


def looks_like_synsets(class_names: list[str]) -> bool:
    return bool(class_names) and all(_SYNSET.fullmatch(c) for c in class_names)


def readable_labels(class_names: list[str]) -> list[str]:
    """Class names as people read them: synset ids mapped to ImageNet names where known."""
    if not looks_like_synsets(class_names):
        return list(class_names)
    table = imagenet_names()
    return [table.get(c, c) for c in class_names]
