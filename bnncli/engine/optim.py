"""Optimizers and learning-rate schedules, stepped once per optimizer step.

The schedule is a pure function of the step number (``LambdaLR``), so its saved state is just
that number and a resumed run continues on exactly the same curve.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnncli.engine.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper; eps 1e-8 as Larq Zoo), RAdam (the authors' 2020 retrain) or SGD with momentum.

    No weight decay unless asked: decaying latent binary weights towards zero only makes their
    signs flip more easily, and the paper trains without it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_epochs``; then ``cosine`` decays to 0 at the last step, ``linear``
    decays to 0 at the last step in a straight line (Larq Zoo's Bi-Real Net: Keras' PolynomialDecay
    with power 1), ``step`` multiplies by ``factor`` at each epoch listed in ``steps``, ``constant`` stays.
    """
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch - warmup)
        progress = min(1.0, (step - warmup) / total)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        total = max(1, cfg.epochs * steps_per_epoch - warmup)
        return max(0.0, 1.0 - (step - warmup) / total)
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch
        return cfg.factor ** sum(1 for milestone in cfg.steps if epoch >= milestone)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, steps_per_epoch))
