#!/usr/bin/env python
"""
Region-precompute speed, measured in one run on this machine with a ViT-B/32-shaped
random CLIP (the real model's shape and cost; weights do not change the speed):

  A. the precompute pipeline (vild_d2.teacher.precompute_shard: decode, proposals, crops
     of the 1.0x and 1.5x boxes, encode, write the store with commits);
  B. the image encoder alone on the same crops, in the same batches (crops made before
     the clock starts);
  C. the reference path (per region and scale a PIL crop + the clip package's preprocess,
     one crop per encoder call).

    python tools/benchmarks/benchmark_region_precompute.py [--images 8 --regions 32 --device cpu]

Target: A's regions/s >= 0.9x B's (decode/crop/write overhead <= 10%).
Images: real COCO JPEGs from ../shared/data/coco128 (or $VILD_D2_SHARED_DATA/coco128)
when present, else generated 640x480 JPEGs. Boxes: random, 16-300 px, fixed seed.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from benchmark_images import benchmark_dataset_dicts
from clip.clip import _transform
from PIL import Image

import vild_d2  # noqa: F401

# isort: split
from vild_d2.data.images import read_image
from vild_d2.teacher import build_clip, crop_regions, reference_region_embeddings
from vild_d2.teacher.precompute import precompute_shard

SCALES = (1.0, 1.5)


def random_boxes(dicts, num_regions):
    rng = np.random.default_rng(0)
    out = {}
    for d in dicts:
        w, h = d["width"], d["height"]
        xy = rng.uniform(0, [w - 16, h - 16], (num_regions, 2))
        wh = rng.uniform(16, 300, (num_regions, 2))
        out[d["image_id"]] = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    return out


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _encoder_alone(model, dicts, boxes, device, dtype) -> float:
    """B: seconds of the image encoder alone on each image's crops (one call per image)."""
    size = model.visual.input_resolution
    warm = crop_regions(
        torch.zeros(3, 64, 64, device=device), torch.tensor([[0.0, 0, 32, 32]]), SCALES, size
    )
    with torch.no_grad():  # warm-up: allocator, kernels
        model.encode_image(warm.to(dtype))
    crops = []
    for d in dicts:
        image = torch.from_numpy(
            np.ascontiguousarray(read_image(d["file_name"], "RGB").transpose(2, 0, 1))
        )
        regions = torch.from_numpy(boxes[d["image_id"]])
        crops.append(crop_regions(image.to(device), regions, SCALES, size).to(dtype))
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for c in crops:
            model.encode_image(c)
    sync(device)
    return time.perf_counter() - t0


def _reference(model, dicts, boxes, device) -> float:
    """C: seconds of the reference path (PIL crops + clip's own preprocessing)."""
    preprocess = _transform(model.visual.input_resolution)
    t0 = time.perf_counter()
    for d in dicts:
        pil = Image.open(d["file_name"]).convert("RGB")
        reference_region_embeddings(model, preprocess, pil, boxes[d["image_id"]], SCALES)
    sync(device)
    return time.perf_counter() - t0


def _print_table(rows, n_regions: int, t_encoder: float) -> None:
    print(f"| {'path':<52} | {'seconds':>8} | {'regions/s':>9} | {'vs encoder':>10} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 11}|{'-' * 12}|")
    for name, t in rows:
        print(f"| {name:<52} | {t:8.2f} | {n_regions / t:9.2f} | {t_encoder / t:9.3f}x |")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--regions", type=int, default=32, help="boxes per image")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true", help="only A and B")
    args = parser.parse_args()

    model = build_clip(seed=0).to(args.device)
    if args.device.startswith("cuda"):
        model = model.half()  # as load_clip on a GPU
    dtype = next(model.parameters()).dtype
    with tempfile.TemporaryDirectory() as tmp:
        dicts, source = benchmark_dataset_dicts(args.images, tmp)
        boxes = random_boxes(dicts, args.regions)
        n_regions = sum(len(b) for b in boxes.values())
        t_encoder = _encoder_alone(model, dicts, boxes, args.device, dtype)
        stats = precompute_shard(  # A. the pipeline, writing a store
            dicts,
            lambda d, image: boxes[d["image_id"]],
            model,
            os.path.join(tmp, "store"),
            teacher_name="random ViT-B/32",
            num_regions=args.regions,
            scales=SCALES,
            progress=False,
        )
        sync(args.device)
        t_pipeline = stats["seconds"]
        assert stats["regions"] == n_regions, stats
        rows = [
            ("B. image encoder alone, same crops", t_encoder),
            ("A. precompute pipeline (decode+crop+encode+write)", t_pipeline),
        ]
        if not args.skip_reference:
            rows.append(
                (
                    "C. reference path (PIL crop + clip preprocess)",
                    _reference(model, dicts, boxes, args.device),
                )
            )
    print(
        f"\n{len(dicts)} images of {source}, {n_regions} regions ({args.regions}/image, scales"
        f" {SCALES}), ViT-B/32-shaped CLIP on {args.device} ({dtype}), torch threads"
        f" {torch.get_num_threads()}:"
    )
    _print_table(rows, n_regions, t_encoder)
    print(f"\npipeline / encoder regions/s = {t_encoder / t_pipeline:.3f} (target >= 0.9)")
    if not args.skip_reference:
        print(f"pipeline / reference regions/s = {rows[2][1] / t_pipeline:.2f}x")


if __name__ == "__main__":
    main()
