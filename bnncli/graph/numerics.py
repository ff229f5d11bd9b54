"""Numeric rules that the lowering and every runtime backend share, defined once.

A compiled kernel must give the NumPy reference's result bit for bit; where the rounding of a
float computation is part of the result, its order is written down here and both follow it.

This module imports NumPy only.
"""

from __future__ import annotations

import numpy as np


def batchnorm_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) of an inference BatchNorm, computed in float32 as PyTorch's CPU kernel."""
    f32 = np.float32
    invstd = f32(1) / np.sqrt(np.asarray(var, f32) + f32(eps))
    scale = (invstd * np.asarray(gamma, f32)).astype(f32)
    shift = (np.asarray(beta, f32) - np.asarray(mean, f32) * scale).astype(f32)
    return scale, shift
