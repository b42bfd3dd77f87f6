#!/usr/bin/env python
"""
roi_align's CPU backward: torchvision's kernel vs vild_d2's separable one
(vild_d2/layers/roi_align_backward.py), measured in one run, interleaved, on the RoIs of
one training step of a box + mask RoI pooler (detectron2's FPN level assignment):

  * the shapes world's base detector: 4 images of 128 x 192, 64 channels, 256 box RoIs
    (7 x 7) and 64 mask RoIs (14 x 14) of 28-80 px objects;
  * LVIS at R50-FPN: 2 images of 1024 x 1024, 256 channels, 1024 box RoIs and 256 mask
    RoIs of 16-600 px.

    python tools/benchmarks/benchmark_roi_align.py [--repeats 15] [--world-only] [--rounds 3]

Prints milliseconds per step (all levels, box and mask pooler) and their ratio, at 1 and
2 threads. Then whole bfloat16 training steps on one thread, with either backward, of
benchmark_precision.py's detector and pretraining stages: the kernel is chosen when a
process starts, so processes of the two take turns (``--rounds`` each, 6 steps a process).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

# vild_d2.layers.roi_align_backward.DISABLE_ENV (checked below), set before vild_d2 is imported
DISABLE_ENV = "VILD_D2_TORCHVISION_ROI_ALIGN_BACKWARD"
CHILD = "--child-steps" in sys.argv  # a step-timing process: its kernel comes from its parent
if not CHILD:
    os.environ[DISABLE_ENV] = "1"  # op timings: autograd keeps torchvision's kernel

# isort: split
import torch  # noqa: E402
from detectron2.modeling.poolers import assign_boxes_to_levels  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

from vild_d2.layers import roi_align_backward  # noqa: E402
from vild_d2.layers.roi_align_backward import roi_align_input_grad  # noqa: E402

assert DISABLE_ENV == roi_align_backward.DISABLE_ENV

STRIDES = (4, 8, 16, 32)  # P2-P5, detectron2's box and mask poolers
# (name, images, height, width, channels, box RoIs, mask RoIs, smallest / largest box px)
SETTINGS = [
    ("shapes world base detector", 4, 128, 192, 64, 256, 64, 28, 80),
    ("LVIS, R50-FPN", 2, 1024, 1024, 256, 1024, 256, 16, 600),
]


def pooler_calls(setting, generator):
    """(features, level RoIs, output size, scale) of each roi_align call of one step."""
    _, images, height, width, channels, num_box, num_mask, low, high = setting
    maps = [
        torch.randn(images, channels, height // s, width // s, generator=generator) for s in STRIDES
    ]
    calls = []
    for num, size in ((num_box, 7), (num_mask, 14)):
        side = low + (high - low) * torch.rand(num, 2, generator=generator)
        corner = torch.rand(num, 2, generator=generator) * torch.tensor([width, height])
        boxes = torch.cat([corner - side / 2, corner + side / 2], 1)
        image = torch.randint(0, images, (num, 1), generator=generator).float()
        levels = assign_boxes_to_levels([Boxes(boxes)], 2, 5, 224, 4)
        for level, stride in enumerate(STRIDES):
            mine = levels == level
            if mine.any():
                rois = torch.cat([image[mine], boxes[mine]], 1)
                calls.append((maps[level], rois, size, 1.0 / stride))
    return calls


def torchvision_backward(calls, grads):
    for (features, rois, size, scale), grad in zip(calls, grads):
        x = features.detach().requires_grad_()
        roi_align(x, rois, (size, size), scale, 0, True).backward(grad)


def separable_backward(calls, grads):
    for (features, rois, size, scale), grad in zip(calls, grads):
        b, c, h, w = features.shape
        roi_align_input_grad(grad, rois, scale, size, size, b, c, h, w, 0, True)


def measure(setting, threads: int, repeats: int):
    torch.set_num_threads(threads)
    calls = pooler_calls(setting, torch.Generator().manual_seed(0))
    grads = [torch.randn(len(r), f.shape[1], s, s) for f, r, s, _ in calls]
    times = {"torchvision": [], "separable": []}
    for _ in range(repeats):
        for name, run in (("torchvision", torchvision_backward), ("separable", separable_backward)):
            start = time.perf_counter()
            run(calls, grads)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}


STEP_STAGES = ("detector (train_net)", "pretraining")  # benchmark_precision.py's stages


def child_steps(steps: int) -> None:
    """In a child process: seconds per bfloat16 step of STEP_STAGES, one thread, as json."""
    import benchmark_precision as bp
    from detectron2.utils.events import EventStorage

    torch.set_num_threads(1)
    args = SimpleNamespace(images=2, size=256, regions=32, cached_images=8, dim=64, classes=48)
    times = {}
    with EventStorage():
        for name in STEP_STAGES:
            step = bp.STAGES[name](args)
            for _ in range(2):  # warm-up
                step(torch.bfloat16)
            times[name] = statistics.median(
                bp._timed(lambda: step(torch.bfloat16)) for _ in range(steps)
            )
    print(json.dumps(times))


def step_table(rounds: int) -> None:
    """Whole steps with each backward: processes of the two kernels taking turns."""
    times = {kernel: {name: [] for name in STEP_STAGES} for kernel in ("0", "1")}
    for _ in range(rounds):
        for kernel in ("1", "0"):  # 1: torchvision's
            env = dict(os.environ, **{DISABLE_ENV: kernel}, PYTHONWARNINGS="ignore")
            out = subprocess.run(
                [sys.executable, __file__, "--child-steps", "6"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for name, seconds in json.loads(out.strip().splitlines()[-1]).items():
                times[kernel][name].append(seconds)
    print(f"\nbfloat16 training step, 1 thread, median over {rounds} processes of each kernel\n")
    print("| stage | torchvision's backward, ms | separable, ms | separable / torchvision |")
    print("|---|---:|---:|---:|")
    for name in STEP_STAGES:
        tv, sep = (1e3 * statistics.median(times[k][name]) for k in ("1", "0"))
        print(f"| {name} | {tv:.0f} | {sep:.0f} | {sep / tv:.2f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15, help="interleaved repeats (median)")
    p.add_argument("--world-only", action="store_true", help="the shapes world's RoIs only")
    p.add_argument("--rounds", type=int, default=3, help="step-timing processes per kernel")
    p.add_argument("--child-steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_steps:
        return child_steps(args.child_steps)
    print(
        "| RoIs of one step | threads | torchvision ms | separable ms | separable / torchvision |"
    )
    print("|---|---:|---:|---:|---:|")
    for setting in SETTINGS[:1] if args.world_only else SETTINGS:
        for threads in (1, 2):
            ms = measure(setting, threads, max(2, args.repeats))
            ratio = ms["separable"] / ms["torchvision"]
            print(
                f"| {setting[0]} | {threads} | {ms['torchvision']:.1f} | {ms['separable']:.1f} "
                f"| {ratio:.2f} |"
            )
    if args.rounds > 0:
        step_table(args.rounds)


if __name__ == "__main__":
    main()
