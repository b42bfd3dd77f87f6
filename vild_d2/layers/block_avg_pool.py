"""
A faster CPU average pooling for windows that tile the map (kernel = stride, no padding),
the only kind CLIP's ModifiedResNet uses (its anti-aliased strided blocks): the same numbers
as torch's ``avg_pool2d`` to the last bit, in float32 and bfloat16, forward and backward.

torch's CPU kernel walks every output pixel's window one scalar at a time and, in bfloat16,
converts each element on its own; in the world's teacher it took 10% of a bfloat16 training
step, more than in float32. Here the window's k x k strided views of the map are added in
the kernel's order (row by row, left to right) in the kernel's accumulation type (float32
for float32 and bfloat16) and divided by k², as the kernel does; the backward spreads each
output gradient, divided by k², over its window, as the kernel does (each input pixel is in
one window, so there is nothing to sum). tests/test_block_avg_pool.py checks both passes
bit for bit against ``avg_pool2d``, and a teacher's weights after training with and without.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlockAvgPool2d", "block_avg_pool2d", "use_block_avg_pools"]


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type torch's CPU pooling kernels sum in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _BlockMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:
        n, c, h, w = x.shape
        oh, ow = h // k, w // k
        ctx.k, ctx.size = k, (h, w)
        tiles = x[:, :, : oh * k, : ow * k].view(n, c, oh, k, ow, k)
        total = tiles[:, :, :, 0, :, 0].to(_accumulation_dtype(x.dtype), copy=True)
        for i in range(k):
            for j in range(k):
                if i or j:
                    total.add_(tiles[:, :, :, i, :, j])
        return total.div_(k * k).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[torch.Tensor, None]:
        k, (h, w) = ctx.k, ctx.size
        n, c, oh, ow = grad.shape
        share = grad / (k * k)  # in bfloat16 too: computed in float32, rounded once
        spread = share[:, :, :, None, :, None].expand(n, c, oh, k, ow, k)
        spread = spread.reshape(n, c, oh * k, ow * k)
        if (oh * k, ow * k) == (h, w):
            return spread, None
        out = grad.new_zeros(n, c, h, w)  # rows and columns past the last window: 0
        out[:, :, : oh * k, : ow * k] = spread
        return out, None


def block_avg_pool2d(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """
    ``F.avg_pool2d(x, kernel_size)`` (stride = kernel, no padding, floor mode) for
    ``x``: [N, C, H, W] -> [N, C, H // k, W // k]; the kernel above on a CPU, torch's
    elsewhere and for kernel 1 (the identity: a mean of one pixel is that pixel).
    """
    if kernel_size == 1:
        return x
    if x.device.type != "cpu" or x.dim() != 4:
        return F.avg_pool2d(x, kernel_size)
    return _BlockMean.apply(x, kernel_size)


class BlockAvgPool2d(nn.Module):
    """``nn.AvgPool2d(k)`` (stride k, no padding) computed by :func:`block_avg_pool2d`."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_avg_pool2d(x, self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def _tiling_kernel(pool: nn.AvgPool2d):
    """k when ``pool`` averages k x k windows that tile the map, else None."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    (kh, kw), stride, padding = pair(pool.kernel_size), pair(pool.stride), pair(pool.padding)
    if kh != kw or stride != (kh, kw) or padding != (0, 0) or pool.ceil_mode:
        return None
    return None if pool.divisor_override not in (None, kh * kw) else kh


def use_block_avg_pools(model: nn.Module) -> int:
    """
    Replace, in place, each ``nn.AvgPool2d`` of ``model`` whose windows tile the map by a
    :class:`BlockAvgPool2d` of its kernel (the same numbers, faster on a CPU); returns how
    many were replaced. The pools hold no weights: checkpoints are unchanged.
    """
    swaps = [
        (parent, name, _tiling_kernel(child))
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.AvgPool2d
    ]
    swaps = [(parent, name, k) for parent, name, k in swaps if k is not None]
    for parent, name, k in swaps:
        setattr(parent, name, BlockAvgPool2d(k))
    return len(swaps)
