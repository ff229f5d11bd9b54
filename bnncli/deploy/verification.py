"""One verification for every deployed form: run it and PyTorch on the same inputs, compare.

``bnn export`` and ``bnn pack`` both call :func:`verify` before they write anything: sample
inputs (:func:`sample_inputs`), the comparison (:func:`compare`), one tolerance
(:data:`TOLERANCE`), and one error (:class:`VerificationError`) that says what disagreed and by
how much.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnncli.errors import ArtifactError

TOLERANCE = 1e-3  # largest |candidate - reference| / max |reference| accepted
SAMPLES = 4  # inputs verified on by default (the last one all zeros)


class VerificationError(ArtifactError):
    """A deployed model computes something other than the checkpoint it came from."""


@dataclass
class Parity:
    """How two backends' logits compare on the same inputs."""

    samples: int
    max_abs_diff: float
    max_rel_diff: float  # max |a - b| / max |reference|
    top1_agree: int

    @property
    def top1_agreement(self) -> float:
        return self.top1_agree / self.samples if self.samples else 1.0

    def within(self, tolerance: float = TOLERANCE) -> bool:
        """Close logits (relative difference at most ``tolerance``) and the same top-1 on every input."""
        return self.max_rel_diff <= tolerance and self.top1_agree == self.samples

    def describe(self) -> str:
        return (f"largest difference {self.max_abs_diff:.3g} ({self.max_rel_diff:.2g} relative), "
                f"top-1 equal on {self.top1_agree}/{self.samples}")

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "top1_agree": self.top1_agree, "top1_agreement": self.top1_agreement}


def compare(reference: np.ndarray, other: np.ndarray) -> Parity:
    """Compare ``other``'s logits with ``reference``'s (both ``[N, classes]``)."""
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    scale = float(np.abs(reference).max(initial=0.0))
    max_abs = float(diff.max(initial=0.0))
    return Parity(samples=int(reference.shape[0]), max_abs_diff=max_abs,
                  max_rel_diff=max_abs / scale if scale > 0 else max_abs,
                  top1_agree=int((reference.argmax(1) == other.argmax(1)).sum()))


def sample_inputs(preprocessing: dict[str, Any], n: int = 4, seed: int = 0) -> np.ndarray:
    """Verification inputs: normal noise (the scale of normalized images) and one all-zero image,
    which makes exact zeros reach binarizations (sign(0) = +1 must hold)."""
    size, channels = int(preprocessing["image_size"]), int(preprocessing["channels"])
    x = np.random.default_rng(seed).standard_normal((max(n, 1), channels, size, size)).astype(np.float32)
    x[-1] = 0.0
    return x


def verify(reference: Callable[[np.ndarray], np.ndarray], candidate: Callable[[np.ndarray], np.ndarray],
           preprocessing: dict[str, Any], *, what: str, samples: int = SAMPLES, tolerance: float = TOLERANCE,
           enforce: bool = True) -> Parity:
    """Run ``reference`` (PyTorch) and ``candidate`` on the same :func:`sample_inputs` and compare.

    ``what`` names the candidate in the error ("the ONNX export of runs/x/best.pt"). With
    ``enforce`` a parity outside ``tolerance`` raises :class:`VerificationError`; without, the
    parity is only returned (for a candidate known to round, which the caller reports).
    """
    x = sample_inputs(preprocessing, samples)
    parity = compare(reference(x), candidate(x))
    if enforce and not parity.within(tolerance):
        raise VerificationError(
            f"{what} disagrees with PyTorch: {parity.describe()} inputs (tolerance {tolerance:g} relative); "
            f"nothing written (a last-bit float difference that flips one near-zero binarization can do this "
            f"in a deep network; if the top-1 agrees, --tolerance accepts it; see docs/deployment.md, Parity)")
    return parity
