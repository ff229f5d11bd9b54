"""Published ImageNet accuracies (top-1, top-5 in percent; None where not reported)."""

from __future__ import annotations

ANCHORS: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "binarydensenet28": {"paper": (60.7, None), "larq_zoo": (60.91, 82.83), "authors_2020": (61.7, 83.3)},
    "binarydensenet37": {"paper": (62.5, None), "larq_zoo": (62.89, 84.19), "authors_2020": (63.3, 84.4)},
    "binarydensenet37_dilated": {"paper": (63.7, None), "larq_zoo": (64.34, 85.15)},
    "binarydensenet45": {"larq_zoo": (64.59, 85.21)},
    "resnete18": {"paper": (58.1, None), "larq_zoo": (58.32, 80.79), "authors_2020": (60.0, 81.9)},
    "birealnet18": {"paper": (56.4, None)},
    # Larq Zoo 2.4's docstrings (larq_zoo.literature.BiRealNet, MeliusNet22, larq_zoo.sota.QuickNet*).
    "birealnet_larq": {"paper": (56.4, 79.5), "larq_zoo": (57.47, 79.84)},
    "quicknet_small": {"larq_zoo": (59.4, 81.8)},
    "quicknet": {"larq_zoo": (63.3, 84.6)},
    "quicknet_large": {"larq_zoo": (66.9, 87.0)},
    "meliusnet22": {"larq_zoo": (62.4, 83.9)},
    # larq_zoo.literature.RealToBinaryNet's docstring; the paper (Martinez et al. 2020) reports 65.4 / 86.2.
    "realtobinarynet": {"paper": (65.4, 86.2), "larq_zoo": (65.01, 85.72)},
    # larq_zoo.literature.XNORNet and BinaryAlexNet (Larq Zoo 2.4's docstrings).
    "xnornet": {"larq_zoo": (44.96, 69.18)},
    "binary_alexnet": {"larq_zoo": (36.30, 61.53)},
}
"""Where a number comes from: the 2019 paper, the Larq Zoo re-implementation, the authors' 2020 retrain."""
