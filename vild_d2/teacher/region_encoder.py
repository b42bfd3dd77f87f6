"""
CLIP image embeddings of many boxes of one image, computed in batches straight from the
image tensor:

    v_r = normalize( sum over scales s of V(crop(I, box_r enlarged by s about its centre,
                                                 clipped to the image)) )

with ViLD's scales (1.0, 1.5). A crop is what CLIP's own preprocessing makes of the
box's pixels — resize the shorter side to the input size, then centre crop — so it is
the box's central square, resampled with ``roi_align`` (area-averaging when shrinking)
and normalised with CLIP's mean/std. :func:`reference_region_embeddings` does the same
one region at a time with PIL and the ``clip`` package's preprocess; it exists to check
the batched path.
"""

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "scale_boxes",
    "central_squares",
    "crop_regions",
    "crop_batch",
    "encode_regions",
    "reference_region_embeddings",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def scale_boxes(boxes: torch.Tensor, scale, image_size: Tuple[int, int]) -> torch.Tensor:
    """
    Args:
        boxes: [n, 4] XYXY, pixels.
        scale: factor on width and height, about the box centre: a float, or [n] per box.
        image_size: (height, width); the result is clipped to it.

    Returns:
        [n, 4] XYXY.
    """
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    hw, hh = (boxes[:, 2] - boxes[:, 0]) * scale / 2, (boxes[:, 3] - boxes[:, 1]) * scale / 2
    h, w = image_size
    return torch.stack(
        [
            (cx - hw).clamp(0, w),
            (cy - hh).clamp(0, h),
            (cx + hw).clamp(0, w),
            (cy + hh).clamp(0, h),
        ],
        dim=1,
    )


def central_squares(boxes: torch.Tensor) -> torch.Tensor:
    """[n, 4] XYXY -> the central square of each box (side = its shorter side)."""
    side = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)


def crop_regions(
    image: torch.Tensor, boxes: torch.Tensor, scales: Sequence[float], size: int
) -> torch.Tensor:
    """
    Args:
        image: [3, H, W] RGB, uint8 or float in [0, 255], any device.
        boxes: [n, 4] XYXY in image pixels, positive width and height after clipping.
        scales: box enlargement factors.
        size: the teacher's input resolution.

    Returns:
        [len(scales) * n, 3, size, size] float, CLIP-normalised; scale-major order.
    """
    h, w = image.shape[-2:]
    boxes = boxes.to(image.device, torch.float32)
    all_boxes = torch.cat([scale_boxes(boxes, s, (h, w)) for s in scales])
    return crop_batch(
        image.unsqueeze(0), all_boxes, torch.zeros(len(all_boxes), dtype=torch.long), size
    )


def crop_batch(
    images: torch.Tensor,
    boxes: torch.Tensor,
    image_index: torch.Tensor,
    size: int,
    normalize: bool = True,
) -> torch.Tensor:
    """
    The crop of :func:`crop_regions` for boxes of several same-size images at once.

    Args:
        images: [N, 3, H, W] RGB, uint8 or float in [0, 255].
        boxes: [K, 4] XYXY pixels (already scaled and clipped).
        image_index: [K] which image each box is in.
        normalize: CLIP-normalise the crops (else RGB in [0, 1]).

    Returns:
        [K, 3, size, size] float: each box's central square, resampled, CLIP-normalised.
    """
    rois = torch.cat(
        [
            image_index.to(images.device, torch.float32)[:, None],
            central_squares(boxes.to(images.device, torch.float32)),
        ],
        dim=1,
    )
    crops = roi_align(
        images.float() / 255.0,
        rois,
        output_size=size,
        spatial_scale=1.0,
        sampling_ratio=0,
        aligned=True,
    )
    if not normalize:
        return crops
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (crops - mean) / std


@torch.no_grad()
def encode_regions(
    model,
    image: torch.Tensor,
    boxes: torch.Tensor,
    scales: Sequence[float] = (1.0, 1.5),
    batch_size: int = 256,
) -> torch.Tensor:
    """
    Args:
        model: a CLIP model; crops go to its device in its dtype (fp16 on GPU).
        image: [3, H, W] RGB (uint8 or 0-255 float).
        boxes: [n, 4] XYXY pixels.
        scales: the crops of each scale are encoded and summed before normalising.
        batch_size: crops per image-encoder call.

    Returns:
        [n, D] float32 on the CPU, unit norm.
    """
    device = next(model.parameters()).device
    dtype = next(model.visual.parameters()).dtype
    n = len(boxes)
    crops = crop_regions(image.to(device), boxes, scales, model.visual.input_resolution)
    feats = (
        torch.cat(
            [
                model.encode_image(crops[i : i + batch_size].to(dtype)).float()
                for i in range(0, len(crops), batch_size)
            ]
        )
        if n
        else torch.zeros(0, model.text_projection.shape[1], device=device)
    )
    summed = feats.view(len(scales), n, -1).sum(dim=0)
    return F.normalize(summed, dim=-1).cpu()


@torch.no_grad()
def reference_region_embeddings(
    model, preprocess, pil_image, boxes: np.ndarray, scales: Sequence[float] = (1.0, 1.5)
) -> torch.Tensor:
    """
    The slow path, for verification: per region and scale, ``PIL.Image.crop`` of the
    scaled box and the ``clip`` package's ``preprocess``. Same output as encode_regions.
    """
    device = next(model.parameters()).device
    dtype = next(model.visual.parameters()).dtype
    w, h = pil_image.size
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    out = []
    for box in boxes:
        total = 0
        for s in scales:
            x0, y0, x1, y1 = scale_boxes(box[None], s, (h, w))[0].tolist()
            crop = preprocess(pil_image.crop((x0, y0, x1, y1)))[None].to(device, dtype)
            total = total + model.encode_image(crop).float()[0]
        out.append(F.normalize(total, dim=-1).cpu())
    return torch.stack(out) if out else torch.zeros(0, model.text_projection.shape[1])
