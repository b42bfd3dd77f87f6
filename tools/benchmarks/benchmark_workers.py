#!/usr/bin/env python
"""
Two CPU worker processes vs one, measured in one run on this machine: the region tool
(images/s of the whole precompute) and ViLD training (seconds per iteration at the same
total batch), both through their real command lines on a generated world with a
ViT-B/32-shaped random teacher for the regions and the tiny R18-FPN ViLD config.

    python tools/benchmarks/benchmark_workers.py [--images 16 --iters 20]

On a machine with two cores both workers share them, so the ratio measures the cost of
running distributed (gloo all-reduce, sharded loading), not a speed-up.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from vild_d2.teacher import build_clip, save_clip_checkpoint
from vild_d2.world.spec import ShapesWorldSpec
from vild_d2.world.splits import generate_shapes_world

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(ROOT, "configs", "shapes_world")


def _run(cmd, env) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def _seconds_per_iter(out: str) -> float:
    """detectron2's own measure: the median time of an iteration (metrics.json, last row)."""
    rows = [
        json.loads(line) for line in open(os.path.join(out, "metrics.json")) if '"time"' in line
    ]
    return rows[-1]["time"]


def _region_command(teacher: str, store: str, regions: int, workers: int) -> list:
    rpn = os.path.join(CONFIGS, "rpn_R_18_FPN_tiny.yaml")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "precompute_region_embeddings.py")]
    cmd += ["--teacher", teacher, "--dataset", "shapes_world_train_ov", "--config-file", rpn]
    cmd += ["--allow-untrained-rpn", "--output", store, "--num-regions", str(regions)]
    return cmd + ["--device", "cpu", "--num-gpus", str(workers)]


def _training_command(text: str, store: str, out: str, args, workers: int) -> list:
    vild = os.path.join(CONFIGS, "vild_R_18_FPN_tiny.yaml")
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--num-gpus", str(workers)]
    cmd += ["--config-file", vild, "MODEL.DEVICE", "cpu", "MODEL.VILD.EMBED_DIM", "512"]
    cmd += ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", text]
    cmd += ["MODEL.VILD.NUM_DISTILL_REGIONS", str(args.regions)]
    cmd += ["DATASETS.REGION_STORE_TRAIN", store, "DATASETS.TEST", "()"]
    cmd += ["SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", str(args.iters)]
    return cmd + ["DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", out]


def _world(tmp: str, images: int):
    """A generated world, a ViT-B/32-shaped random teacher (D = 512) and random text embeddings."""
    generate_shapes_world(
        os.path.join(tmp, "data", "shapes_world"),
        ShapesWorldSpec(seed=5, num_train=images, num_val=2, image_size=128),
    )
    teacher = os.path.join(tmp, "clip.pt")
    save_clip_checkpoint(build_clip(seed=0), teacher)
    text = os.path.join(tmp, "text.npy")
    np.save(text, np.random.default_rng(0).normal(size=(48, 512)).astype(np.float32))
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.join(tmp, "data"), PYTHONWARNINGS="ignore")
    return teacher, text, env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--images", type=int, default=16, help="training images of the generated world")
    p.add_argument("--regions", type=int, default=16, help="M per image")
    p.add_argument("--iters", type=int, default=20, help="training iterations")
    args = p.parse_args()

    # The run writes ~0.7 GB (two region stores, two trainings): removed when it ends.
    region_s, iter_s = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        teacher, text, env = _world(tmp, args.images)
        for workers in (1, 2):
            store = os.path.join(tmp, f"store{workers}")
            region_s[workers] = _run(_region_command(teacher, store, args.regions, workers), env)
        for workers in (1, 2):
            out = os.path.join(tmp, f"train{workers}")
            store = os.path.join(tmp, "store1")
            _run(_training_command(text, store, out, args, workers), env)
            iter_s[workers] = _seconds_per_iter(out)

    print(f"\n{args.images} images of 128x128, M={args.regions}, D=512, {os.cpu_count()} cores\n")
    print("| job | 1 worker | 2 workers | 2 / 1 |")
    print("|---|---:|---:|---:|")
    print(
        f"| region tool, whole run (ViT-B/32-shaped teacher), s "
        f"| {region_s[1]:.1f} | {region_s[2]:.1f} "
        f"| {region_s[2] / region_s[1]:.2f}x |"
    )
    print(
        f"| ViLD training, s per iteration (batch 4 in all) | {iter_s[1]:.3f} | {iter_s[2]:.3f} "
        f"| {iter_s[2] / iter_s[1]:.2f}x |"
    )


if __name__ == "__main__":
    main()
