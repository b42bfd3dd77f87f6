"""
Mixed-precision training (``SOLVER.AMP``): which dtype the forward pass autocasts to, and
the trainer that does it without loss scaling.

``SOLVER.AMP.ENABLED`` is detectron2's switch; ``SOLVER.AMP.DTYPE`` picks the dtype:
float16 with loss scaling on CUDA (detectron2's ``AMPTrainer``, unchanged), bfloat16 on a
CPU (about twice the GEMM rate of float32 on CPUs with AVX-512 BF16; it has float32's
exponent range, so no loss scaling). Weights, gradients and the optimiser stay float32;
autocast runs convolutions and matrix products in the low precision and keeps losses and
reductions in float32. ViLD's cosine classifier stays float32 in any case (its logits are
cosines / tau, up to 100: bfloat16's 8-bit mantissa would move them by ~0.4;
:class:`~vild_d2.modeling.ZeroShotClassifier`).
"""

import time
from contextlib import nullcontext
from typing import Optional

import torch
from detectron2.engine import SimpleTrainer

from ..config import ConfigError

__all__ = ["AUTOCAST_DTYPES", "autocast_dtype", "autocast", "AutocastTrainer"]

AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def autocast_dtype(cfg) -> Optional[torch.dtype]:
    """
    The dtype that training autocasts to: None with ``SOLVER.AMP.ENABLED`` off, else
    ``SOLVER.AMP.DTYPE`` ("" = float16 on CUDA, bfloat16 on a CPU). ConfigError for an
    unknown name, or float16 on a CPU (no loss scaling there; use bfloat16).
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    cuda = str(cfg.MODEL.DEVICE).startswith("cuda")
    name = cfg.SOLVER.AMP.DTYPE or ("float16" if cuda else "bfloat16")
    if name not in AUTOCAST_DTYPES:
        raise ConfigError(
            f"SOLVER.AMP.DTYPE is '{name}': choose {' or '.join(AUTOCAST_DTYPES)} ('' = the"
            " device's: float16 on CUDA, bfloat16 on a CPU)"
        )
    if name == "float16" and not cuda:
        raise ConfigError(
            "SOLVER.AMP.DTYPE float16 on a CPU: float16 needs loss scaling, which detectron2's"
            " AMP does on CUDA only; use bfloat16 (or '')"
        )
    return AUTOCAST_DTYPES[name]


def autocast(device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` on ``device``'s type in ``dtype``; no change when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class AutocastTrainer(SimpleTrainer):
    """
    detectron2's SimpleTrainer with the model's forward pass and losses under
    :func:`autocast` in ``dtype`` and no loss scaling: for bfloat16 (on a CPU, or on CUDA
    when asked). Float16 on CUDA is detectron2's AMPTrainer's.
    """

    def __init__(self, model, data_loader, optimizer, device, dtype: torch.dtype):
        super().__init__(model, data_loader, optimizer)
        self.device, self.dtype = device, dtype

    @classmethod
    def from_trainer(cls, trainer: SimpleTrainer, device, dtype: torch.dtype):
        """``trainer``'s model, optimiser and running data iterator (no second one started)."""
        new = cls.__new__(cls)
        new.__dict__.update(trainer.__dict__)
        new.device, new.dtype = device, dtype
        return new

    def run_step(self):
        assert self.model.training, "[AutocastTrainer] the model was switched to eval mode"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with autocast(self.device, self.dtype):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(v.float() for v in loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
