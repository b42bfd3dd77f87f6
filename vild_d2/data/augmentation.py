"""
Augmentations: for training detectron2's defaults or large-scale jitter (INPUT.LSJ); for
testing detectron2's ResizeShortestEdge or the official ViLD's TensorFlow 1 resize.
"""

from typing import List

import detectron2.data.transforms as T
import numpy as np
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils


def build_train_augmentation(cfg) -> List[T.Augmentation]:
    """
    With ``INPUT.LSJ.ENABLED``: resize by a random factor in [MIN_SCALE, MAX_SCALE] of
    IMAGE_SIZE, crop/pad to IMAGE_SIZE x IMAGE_SIZE, random horizontal flip (ViLD's
    recipe). Otherwise detectron2's ResizeShortestEdge + flip from ``INPUT.*``.
    """
    if not cfg.INPUT.LSJ.ENABLED:
        return utils.build_augmentation(cfg, is_train=True)
    size = cfg.INPUT.LSJ.IMAGE_SIZE
    return [
        T.ResizeScale(cfg.INPUT.LSJ.MIN_SCALE, cfg.INPUT.LSJ.MAX_SCALE, size, size),
        T.FixedSizeCrop(crop_size=(size, size)),
        T.RandomFlip(horizontal=True),
    ]


def train_mapper_kwargs(cfg) -> dict:
    """DatasetMapper's training arguments with :func:`build_train_augmentation`."""
    kwargs = DatasetMapper.from_config(cfg, is_train=True)
    kwargs["augmentations"] = build_train_augmentation(cfg)
    if cfg.INPUT.LSJ.ENABLED:
        kwargs["recompute_boxes"] = cfg.MODEL.MASK_ON  # boxes from the cropped masks
    return kwargs


def tf1_resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """
    TensorFlow 1's bilinear resize (``align_corners=False, half_pixel_centers=False``, no
    antialiasing), which the official ViLD applies to its inputs: output pixel i samples
    the input at i * in / out (float32), between floor and ceil of it (clamped to the
    image), x first, then y, with TensorFlow's float32 arithmetic.

    Args:
        image: [H, W, C] or [H, W], any numeric dtype.
        height, width: the output size.

    Returns:
        [height, width, (C)] float32.
    """

    def taps(in_size: int, out_size: int):
        scale = np.float32(in_size) / np.float32(out_size)
        source = np.arange(out_size, dtype=np.float32) * scale
        low = np.floor(source)
        high = np.minimum(np.ceil(source), in_size - 1).astype(np.int64)
        return np.maximum(low, 0).astype(np.int64), high, (source - low).astype(np.float32)

    img = np.asarray(image, dtype=np.float32)
    y0, y1, ly = taps(img.shape[0], height)
    x0, x1, lx = taps(img.shape[1], width)
    shape = (1, -1) + (1,) * (img.ndim - 2)
    lx, ly = lx.reshape(shape), ly.reshape((-1,) + (1,) * (img.ndim - 1))
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * lx
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * lx
    return top + (bottom - top) * ly


class TF1ResizeTransform(T.Transform):
    """Resize [h, w] -> [new_h, new_w] with :func:`tf1_resize_bilinear` (float32 images out)."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return tf1_resize_bilinear(img, self.new_h, self.new_w)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float32).copy()
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return T.ResizeTransform(self.h, self.w, self.new_h, self.new_w, 0).apply_segmentation(
            segmentation
        )

    def inverse(self) -> T.Transform:
        return TF1ResizeTransform(self.new_h, self.new_w, self.h, self.w)


class TF1ResizeShortestEdge(T.Augmentation):
    """
    ResizeShortestEdge's size rule (shorter side to ``short_edge_length`` unless the
    longer would pass ``max_size``) with the official ViLD's arithmetic: float32 scale,
    sizes rounded half to even, :class:`TF1ResizeTransform`. With both 1024 this is the
    official eval resize: scale = min(1024 / H, 1024 / W).
    """

    def __init__(self, short_edge_length: int, max_size: int):
        super().__init__()
        self.short_edge_length = short_edge_length
        self.max_size = max_size

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        size = np.array([h, w], dtype=np.float32)
        scale = np.float32(self.short_edge_length) / size.min()
        scale = min(scale, np.float32(self.max_size) / size.max())
        new_h, new_w = (int(v) for v in np.round(size * np.float32(scale)))
        return TF1ResizeTransform(h, w, new_h, new_w)


def build_test_resize(min_size: int, max_size: int, tf1: bool = False) -> T.Augmentation:
    """The test resize: ``ResizeShortestEdge(min_size, max_size)``, or its TF1 form."""
    if tf1:
        return TF1ResizeShortestEdge(min_size, max_size)
    return T.ResizeShortestEdge([min_size, min_size], max_size)


def build_test_augmentation(cfg) -> List[T.Augmentation]:
    """``INPUT.MIN_SIZE_TEST``, ``MAX_SIZE_TEST`` and ``TF1_RESIZE_TEST`` as augmentations."""
    return [
        build_test_resize(
            cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.TF1_RESIZE_TEST
        )
    ]
