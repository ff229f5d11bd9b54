"""A BatchNorm with a learned shift but no learned scale."""

from __future__ import annotations

from torch import nn


class UnscaledBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with a learned shift but no learned scale (Keras' ``BatchNormalization(scale=False)``,
    as XNOR-Net and BinaryAlexNet use it): ``weight`` is None, ``bias`` is trained. PyTorch's batch
    norm and the lowering (a missing weight is 1) take it as it is; the fx tracer keeps it whole."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
