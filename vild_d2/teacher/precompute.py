"""
The region-embedding precompute loop of one worker: for each of its images, proposals ->
top M valid boxes -> batched CLIP crops (:func:`encode_regions`) -> its shard of the
region store. Resumable: images already committed to the shard are skipped.
"""

import logging
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.images import read_image
from ..data.region_store import ShardWriter, create_region_store
from ..errors import VildD2Error
from ..utils.boxes import clip_boxes_xyxy
from .region_encoder import encode_regions

__all__ = ["PrecomputeError", "precompute_shard", "worker_images"]

logger = logging.getLogger(__name__)


class PrecomputeError(VildD2Error, RuntimeError):
    """An input of the precompute that cannot be used (e.g. an unreadable image, named)."""


def worker_images(dataset_dicts: List[dict], rank: int, world_size: int) -> List[dict]:
    """The images of worker ``rank``: every ``world_size``-th image in image-id order."""
    return sorted(dataset_dicts, key=lambda d: d["image_id"])[rank::world_size]


def _read(d: dict) -> np.ndarray:
    """The RGB image [H, W, 3] uint8 of dataset dict ``d``; PrecomputeError naming it."""
    try:
        return read_image(d["file_name"], format="RGB")
    except Exception as e:  # PIL and OSError raise many kinds: name the image and what
        raise PrecomputeError(
            f"image id {d['image_id']}: cannot read {d['file_name']} ({e})"
        ) from None


def _regions(proposals, image_size, min_box_size: float, stats: dict) -> np.ndarray:
    """
    Proposals [n, 4] XYXY clipped to ``image_size`` (h, w), those narrower or shorter than
    ``min_box_size`` dropped; counts both in ``stats``. Returns [k, 4] float32, in order.
    """
    boxes = np.asarray(proposals, dtype=np.float32).reshape(-1, 4)
    clipped = clip_boxes_xyxy(boxes, tuple(image_size))
    stats["boxes_clipped"] += int((clipped != boxes).any(axis=1).sum())
    ok = ((clipped[:, 2] - clipped[:, 0]) >= min_box_size) & (
        (clipped[:, 3] - clipped[:, 1]) >= min_box_size
    )
    stats["boxes_dropped"] += int((~ok).sum())
    return clipped[ok]


def precompute_shard(
    dataset_dicts: List[dict],
    proposals: Callable[[dict, np.ndarray], np.ndarray],
    model,
    store_dir: str,
    *,
    teacher_name: str,
    rank: int = 0,
    world_size: int = 1,
    num_regions: int = 300,
    scales: Sequence[float] = (1.0, 1.5),
    min_box_size: float = 1.0,
    commit_every: int = 32,
    progress: bool = True,
    extra: dict = None,
) -> Dict[str, float]:
    """
    Args:
        dataset_dicts: all images (detectron2 dicts with file_name, image_id, height, width).
        proposals: (dataset dict, RGB image [H, W, 3] uint8) -> [n, 4] XYXY boxes in
            original pixels, best first.
        model: the CLIP teacher (its D must match an existing store's).
        store_dir: the store; created (or checked) with ``world_size`` shards.
        rank, world_size: this worker writes shard ``rank`` with its share of the images.
        num_regions: M, the first M valid boxes are kept.
        min_box_size: boxes narrower or shorter than this (pixels, after clipping to the
            image) are skipped and counted.

    Returns:
        summary: images written / skipped as done, regions, boxes clipped, boxes dropped,
        seconds, images/s and regions/s.
    """
    dim = int(model.text_projection.shape[1])
    shape = dict(embed_dim=dim, crop_scales=scales, num_shards=world_size)
    create_region_store(store_dir, teacher=teacher_name, extra=extra, **shape)
    mine = worker_images(dataset_dicts, rank, world_size)
    stats = dict(images=0, already_done=0, regions=0, boxes_clipped=0, boxes_dropped=0)
    start = time.perf_counter()
    with ShardWriter(store_dir, rank, commit_every=commit_every) as shard:
        bar = tqdm(mine, desc=f"regions [{rank}/{world_size}]", unit="img", disable=not progress)
        for d in bar:
            if d["image_id"] in shard:
                stats["already_done"] += 1
                continue
            image = _read(d)
            h, w = image.shape[:2]
            kept = _regions(proposals(d, image), (h, w), min_box_size, stats)[:num_regions]
            tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
            emb = encode_regions(model, tensor, torch.from_numpy(kept), scales)
            shard.add(d["image_id"], kept, emb.numpy(), (h, w))
            stats["images"] += 1
            stats["regions"] += len(kept)
            bar.set_postfix(regions=stats["regions"])
    stats["seconds"] = time.perf_counter() - start
    stats["images_per_s"] = stats["images"] / max(stats["seconds"], 1e-9)
    stats["regions_per_s"] = stats["regions"] / max(stats["seconds"], 1e-9)
    logger.info(f"shard {rank}/{world_size} of {store_dir}: {stats}")
    return stats
