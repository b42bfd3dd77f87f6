"""
A faster CPU backward for torchvision's ``roi_align`` (every RoI pooler of detectron2's
R-CNNs uses it). torchvision's CPU kernel scatters each output gradient to its four
bilinear neighbours one scalar at a time, recomputing the sampling weights for every
channel, on one thread: in the world's base detector it was 20% of a training step.

RoIAlign is separable: output[r, c, i, j] = sum_y sum_x Wy[r, i, y] F[b_r, c, y, x]
Wx[r, j, x], where Wy (Wx) averages the bilinear weights of RoI r's sampling rows
(columns) of bin i (j), non-zero only on the RoI's window of the map. So RoI r's share of
the input gradient is Wy[r]^T G[r] Wx[r] on that window: two batched matrix products over
chunks of RoIs with windows of about the same size, the windows then added into the map
with one ``index_add_``, multi-threaded like any other op. The weights follow
torchvision's kernel rule for rule (``aligned``'s half-pixel shift, the adaptive grid of
``sampling_ratio`` 0, samples beyond [-1, size] contributing 0, coordinates clamped to
the map), so the gradient is the same up to float summation order
(tests/test_roi_align_backward.py checks it against finite differences of torchvision's
own forward). The forward stays torchvision's; CUDA keeps its kernel.
"""

import os
from typing import List

import torch

__all__ = ["roi_align_input_grad", "use_separable_roi_align_backward"]

# set to 1 to keep torchvision's own CPU kernel
DISABLE_ENV = "VILD_D2_TORCHVISION_ROI_ALIGN_BACKWARD"

CHUNK = 64  # RoIs per chunk
_LIBRARY = None  # the torch.library registration; must stay alive while it is in use


def _axis_weights(start, bin_size, grid, pooled: int, length: int):
    """
    For each RoI and bin, the average over its ``grid`` sampling positions of their
    bilinear weights on the rows (or columns) of the map, within the RoI's window: the
    weights [R, pooled, K] and each window's first row [R] (int64; K: the widest window).

    Args:
        start, bin_size: [R], the RoI's first coordinate and bin size, in feature pixels.
        grid: [R] int64, sampling positions per bin along this axis (0: none).
        length: the map's height (or width).
    """
    num, dtype = start.shape[0], start.dtype
    steps = int(grid.max().clamp(min=1))
    bins = torch.arange(pooled, dtype=dtype)[None, :, None]
    sample = torch.arange(steps, dtype=dtype)[None, None, :]
    per_grid = grid.clamp(min=1).to(dtype)[:, None, None]
    pos = start[:, None, None] + bins * bin_size[:, None, None]
    pos = pos + (sample + 0.5) * bin_size[:, None, None] / per_grid
    used = (sample < grid.to(dtype)[:, None, None]) & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0.0, max=length)
    low = pos.floor().long()
    last = low >= length - 1
    low = low.clamp(max=length - 1)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(pos), pos - low.to(dtype))
    weight = used.to(dtype) / per_grid
    first = torch.where(used, low, torch.full_like(low, length)).flatten(1).amin(1)
    first = first.clamp(max=length - 1)
    size = int((torch.where(used, high, first[:, None, None]) - first[:, None, None]).max()) + 1
    out = torch.zeros(num, pooled, size + 1, dtype=dtype)  # the last column: unused samples
    for index, part in ((low, 1.0 - frac), (high, frac)):
        index = torch.where(used, index - first[:, None, None], size)
        out.scatter_add_(
            2, index.reshape(num, pooled, -1), (part * weight).reshape(num, pooled, -1)
        )
    return out[:, :, :size], first


def _roi_geometry(rois, spatial_scale: float, pooled, sampling_ratio: int, aligned: bool):
    """(y0, x0, bin_h, bin_w, grid_h, grid_w) of each RoI, as torchvision's kernel has them."""
    offset = 0.5 if aligned else 0.0
    y0 = rois[:, 2] * spatial_scale - offset
    x0 = rois[:, 1] * spatial_scale - offset
    height = rois[:, 4] * spatial_scale - offset - y0
    width = rois[:, 3] * spatial_scale - offset - x0
    if not aligned:  # the legacy kernel makes every RoI at least 1x1
        height, width = height.clamp(min=1.0), width.clamp(min=1.0)
    bin_h, bin_w = height / pooled[0], width / pooled[1]
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(y0, sampling_ratio, dtype=torch.long)
    else:  # adaptive: ceil(RoI size / bins) positions per bin, none for an empty RoI
        grid_h = torch.ceil(height / pooled[0]).clamp(min=0).long()
        grid_w = torch.ceil(width / pooled[1]).clamp(min=0).long()
    return y0, x0, bin_h, bin_w, grid_h, grid_w


def _similar_windows(height, width) -> List[torch.Tensor]:
    """
    The RoIs (of these extents, [R], feature pixels) in chunks of at most CHUNK whose
    windows are alike in both height and width (within a factor of about 1.4 each): a
    chunk pads its windows to its largest.
    """
    bucket = lambda extent: torch.ceil(2 * torch.log2(extent + 2)).long()  # noqa: E731
    key = bucket(height) * 64 + bucket(width)
    order = key.argsort()
    counts = torch.unique_consecutive(key[order], return_counts=True)[1].tolist()
    return [chunk for group in order.split(counts) for chunk in group.split(CHUNK)]


def _window_grads(grad, geometry, size):
    """
    Each RoI's gradient on its window of the map: (pixel [R, Kh, Kw], the window's pixel
    index in an image of ``size`` (H, W); window [R, Kh, Kw, C]). ``grad``: [R, C, ph, pw].
    """
    (num, channels, pooled_h, pooled_w), (height, width) = grad.shape, size
    y0, x0, bin_h, bin_w, grid_h, grid_w = geometry
    rows, top = _axis_weights(y0, bin_h, grid_h, pooled_h, height)  # [R, ph, Kh]
    cols, left = _axis_weights(x0, bin_w, grid_w, pooled_w, width)  # [R, pw, Kw]
    # rows^T G cols, one matrix product per axis, into [R, Kh, Kw, C]
    partial = torch.bmm(grad.reshape(num, channels * pooled_h, pooled_w), cols)
    partial = partial.reshape(num, channels, pooled_h, -1).permute(0, 2, 3, 1).contiguous()
    window = torch.bmm(rows.transpose(1, 2), partial.reshape(num, pooled_h, -1))
    window = window.reshape(num, rows.shape[2], cols.shape[2], channels)
    # past the map's edge a window's weights are 0: clamping those pixels adds nothing
    y = (top[:, None] + torch.arange(rows.shape[2])).clamp(max=height - 1)
    x = (left[:, None] + torch.arange(cols.shape[2])).clamp(max=width - 1)
    return y[:, :, None] * width + x[:, None, :], window


def roi_align_input_grad(
    grad: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """
    The gradient of ``roi_align``'s input: [batch_size, channels, height, width] in
    ``grad``'s dtype, from ``grad``: [R, channels, pooled_height, pooled_width] and
    ``rois``: [R, 5] (image index, x0, y0, x1, y1 in image pixels). The arguments are those
    of ``torchvision::_roi_align_backward``. Half-precision gradients are summed in float32.
    """
    work = torch.float64 if grad.dtype == torch.float64 else torch.float32
    out = torch.zeros(batch_size, channels, height, width, dtype=work)
    num = rois.shape[0]
    if num == 0:
        return out.to(grad.dtype)
    geometry = _roi_geometry(
        rois.to(work), spatial_scale, (pooled_height, pooled_width), sampling_ratio, aligned
    )
    bin_h, bin_w = geometry[2:4]
    chunks = _similar_windows(bin_h.abs() * pooled_height, bin_w.abs() * pooled_width)
    flat = out.view(batch_size * height * width, channels)  # still zeros: its layout is free
    for chunk in chunks:
        part = [t.index_select(0, chunk) for t in geometry]
        pixel, window = _window_grads(grad.index_select(0, chunk).to(work), part, (height, width))
        pixel = pixel + rois[chunk, 0].long()[:, None, None] * (height * width)
        flat.index_add_(0, pixel.flatten(), window.reshape(-1, channels))
    out = flat.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()
    return out.to(grad.dtype)


def use_separable_roi_align_backward() -> bool:
    """
    Make :func:`roi_align_input_grad` torchvision's CPU backward of ``roi_align`` in this
    process (once; CUDA keeps its kernel). Skipped, returning False, when the environment
    sets ``VILD_D2_TORCHVISION_ROI_ALIGN_BACKWARD=1`` or torchvision has no such operator.
    """
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    if os.environ.get(DISABLE_ENV, "0") == "1":
        return False
    try:
        import torchvision  # noqa: F401  (defines the torchvision:: operators)

        torch.ops.torchvision._roi_align_backward.default
    except (ImportError, AttributeError, RuntimeError):
        return False
    library = torch.library.Library("torchvision", "IMPL")
    library.impl("_roi_align_backward", roi_align_input_grad, "CPU")
    _LIBRARY = library
    return True
