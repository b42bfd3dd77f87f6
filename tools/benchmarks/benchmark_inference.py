#!/usr/bin/env python
"""
Inference time per image of ViLD and ViLD-ensemble relative to a stock Mask R-CNN with
the same backbone and heads (the shapes-world tiny configs), measured in one run on this
machine. Models are randomly initialised; the score threshold is 0 so that every model
sends the same number of detections (TEST.DETECTIONS_PER_IMAGE) to the mask head.

    python tools/benchmarks/benchmark_inference.py [--images 30 --size 512 --device cpu]

Targets: ViLD <= 1.05x, ViLD-ensemble <= 1.3x the stock model.
"""

import argparse
import os
import statistics

import torch
from detectron2.modeling import build_model

import vild_d2  # noqa: F401  (registers ViLD components)

# isort: split
from benchmark_models import random_images, time_inference, tiny_model_opts

from vild_d2.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "Mask R-CNN (stock)": "configs/shapes_world/mask_rcnn_R_18_FPN_tiny.yaml",
    "ViLD": "configs/shapes_world/vild_R_18_FPN_tiny.yaml",
    "ViLD-ensemble": "configs/shapes_world/vild_ensemble_R_18_FPN_tiny.yaml",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--images", type=int, default=30)
    p.add_argument("--size", type=int, default=512, help="input side, pixels")
    p.add_argument("--classes", type=int, default=36, help="vocabulary size C")
    p.add_argument("--embed-dim", type=int, default=512, help="D")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    common, vild = tiny_model_opts(args.classes, args.embed_dim, args.size, args.device)
    models = {}
    for name, rel in CONFIGS.items():
        torch.manual_seed(0)
        cfg = load_config(os.path.join(ROOT, rel), common + (vild if "ViLD" in name else []))
        models[name] = build_model(cfg).eval()

    def check(name, out):  # the score threshold is 0: every model keeps its top k
        assert len(out[0]["instances"]) == models[name].roi_heads.box_predictor.test_topk_per_image

    images = random_images(args.images, args.size)
    times = time_inference(models, images, args.device, check)
    base = statistics.median(times["Mask R-CNN (stock)"])
    print(
        f"\ninference per image, {args.images} images of {args.size}x{args.size}, C={args.classes},"
        f" D={args.embed_dim}, device={args.device}, torch threads={torch.get_num_threads()}\n"
    )
    print(f"| {'model':<20} | median ms | p90 ms | vs stock |")
    print(f"|{'-' * 22}|-----------|--------|----------|")
    for name, t in times.items():
        med = statistics.median(t)
        p90 = sorted(t)[int(0.9 * (len(t) - 1))]
        print(f"| {name:<20} | {1000 * med:9.1f} | {1000 * p90:6.1f} | {med / base:7.3f}x |")


if __name__ == "__main__":
    main()
