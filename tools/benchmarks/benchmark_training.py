#!/usr/bin/env python
"""
Training step time with vs without distillation, measured in one run on this machine:
ViLD (text loss + L1 on M regions through the same box head) and ViLD-ensemble (a second
box head for the regions) against ViLD-text (no regions), on the same synthetic batches
(tiny R18-FPN configs, random weights, forward + backward + SGD step; no data loading).

    python tools/benchmarks/benchmark_training.py [--steps 12 --size 512 --regions 300 --dim 512]

Target: ViLD <= 1.15x ViLD-text.
"""

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import vild_d2  # noqa: F401  (first: registers ViLD components, imports detectron2 quietly)

# isort: split
from benchmark_models import tiny_model_opts
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from vild_d2.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "ViLD-text": (
        "configs/shapes_world/vild_text_R_18_FPN_tiny.yaml",
        ["MODEL.VILD.IMAGE_LOSS_WEIGHT", "0.0"],
    ),
    "ViLD": ("configs/shapes_world/vild_R_18_FPN_tiny.yaml", []),
    "ViLD-ensemble": ("configs/shapes_world/vild_ensemble_R_18_FPN_tiny.yaml", []),
}


def synthetic_batch(seed: int, images: int, size: int, regions: int, dim: int, classes: int):
    """Images with 6 boxes (and masks) each and ``regions`` distillation regions."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(images):
        inst = Instances((size, size))
        xy = torch.randint(0, size // 2, (6, 2), generator=g).float()
        boxes = torch.cat([xy, xy + torch.randint(32, size // 2, (6, 2), generator=g).float()], 1)
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, classes, (6,), generator=g)
        inst.gt_masks = PolygonMasks(
            [[[b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]] for b in boxes.tolist()]
        )
        r = Instances((size, size))
        rxy = torch.randint(0, size - 64, (regions, 2), generator=g).float()
        r.boxes = Boxes(
            torch.cat([rxy, rxy + torch.randint(16, 64, (regions, 2), generator=g).float()], 1)
        )
        r.embeddings = F.normalize(torch.randn(regions, dim, generator=g), dim=1).half()
        batch.append(
            {
                "image": torch.randint(0, 255, (3, size, size), generator=g).float(),
                "instances": inst,
                "distill_regions": r,
                "image_id": 0,
            }
        )
    return batch


def build_models(args) -> dict:
    """name -> (model in training mode, its optimizer), each from seed 0."""
    common, vild = tiny_model_opts(args.classes, args.dim, args.size, "cpu")
    run = ["MODEL.VILD.NUM_DISTILL_REGIONS", str(args.regions)]
    run += ["SOLVER.IMS_PER_BATCH", str(args.images)]
    models = {}
    for name, (rel, extra) in CONFIGS.items():
        torch.manual_seed(0)
        cfg = load_config(os.path.join(ROOT, rel), common + vild + extra + run)
        model = build_model(cfg).train()
        models[name] = (model, build_optimizer(cfg, model))
    return models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument(
        "--steps", type=int, default=12, help="timed steps per model (after 2 warm-up steps)"
    )
    p.add_argument("--images", type=int, default=2, help="images per batch")
    p.add_argument("--size", type=int, default=512, help="input side, pixels")
    p.add_argument("--regions", type=int, default=300, help="M distillation regions per image")
    p.add_argument("--dim", type=int, default=512, help="D")
    p.add_argument("--classes", type=int, default=48, help="vocabulary size C")
    args = p.parse_args()

    models = build_models(args)
    batches = [
        synthetic_batch(s, args.images, args.size, args.regions, args.dim, args.classes)
        for s in range(args.steps + 2)
    ]
    times = {name: [] for name in models}
    with EventStorage():
        for step, batch in enumerate(batches):
            for name, (model, optimizer) in models.items():  # interleaved: drift hits all alike
                t0 = time.perf_counter()
                losses = model(batch)
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
                if step >= 2:
                    times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["ViLD-text"])
    print(
        f"\ntraining step, {args.images} images of {args.size}x{args.size},"
        f" M={args.regions} regions per image, D={args.dim}, C={args.classes}, torch"
        f" threads={torch.get_num_threads()}, median of {args.steps} steps\n"
    )
    print("| model | ms per step | vs ViLD-text |")
    print("|---|---:|---:|")
    for name, t in times.items():
        print(
            f"| {name} | {1000 * statistics.median(t):.0f} | {statistics.median(t) / base:.3f}x |"
        )


if __name__ == "__main__":
    main()
