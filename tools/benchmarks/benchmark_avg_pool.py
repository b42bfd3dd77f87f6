#!/usr/bin/env python
"""
CLIP's average pools on a CPU: torch's ``avg_pool2d`` vs vild_d2's tiling one
(vild_d2/layers/block_avg_pool.py), measured in one run, interleaved, on the world teacher
(tools/train_world_teacher.py's shape, 96 crops a step):

  * its pools alone (forward and backward of every ``nn.AvgPool2d`` of the image tower,
    at the shapes a training step gives them);
  * whole training steps (benchmark_precision.py's teacher stage) with either pool.

    python tools/benchmarks/benchmark_avg_pool.py [--repeats 20 --threads 1]

Prints milliseconds per step in float32 and bfloat16 autocast, their ratios, and whether
the two pools gave the same numbers (outputs and input gradients, bit for bit).
"""

import argparse
import statistics
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

import vild_d2  # noqa: F401  (first: imports detectron2 quietly)

# isort: split
import benchmark_precision as bp

from vild_d2.layers import block_avg_pool2d
from vild_d2.teacher import build_clip
from vild_d2.world.teacher_training import WORLD_TEACHER_SHAPE

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def pool_calls(batch: int):
    """(input shape, kernel) of each nn.AvgPool2d call of the teacher's image tower."""
    model = build_clip(seed=0, **WORLD_TEACHER_SHAPE)
    calls = []
    for module in model.visual.modules():
        if type(module) is nn.AvgPool2d:
            module.register_forward_hook(
                lambda m, inputs, _: calls.append((tuple(inputs[0].shape), m.kernel_size))
            )
    res = model.visual.input_resolution
    with torch.no_grad():
        model.encode_image(torch.zeros(batch, 3, res, res))
    return calls


def pool_tensors(calls, dtype):
    """Per call: (input, kernel, output gradient), random, in ``dtype``."""
    tensors = []
    for i, (shape, k) in enumerate(calls):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(shape, generator=g).to(dtype)
        out_shape = (*shape[:2], shape[2] // k, shape[3] // k)
        tensors.append((x, k, torch.randn(out_shape, generator=g).to(dtype)))
    return tensors


def pools_step(tensors, pool):
    """One forward and backward of every call with ``pool``: (outputs, input gradients)."""
    outs, grads = [], []
    for x, k, grad in tensors:
        x = x.detach().requires_grad_()
        y = pool(x, k)
        y.backward(grad)
        outs.append(y.detach())
        grads.append(x.grad)
    return outs, grads


def teacher_steps() -> dict:
    """benchmark_precision.py's teacher step, with torch's pools and with the tiling ones."""
    bp_args = SimpleNamespace(classes=48)
    return {
        "torch": bp.teacher_step(bp_args, tiled_pools=False),
        "tiling": bp.teacher_step(bp_args),  # as the teacher trains
    }


def interleaved(fns: dict, repeats: int) -> dict:
    """name -> median ms of ``fn()`` over ``repeats`` turns (the first dropped)."""
    times = {name: [] for name in fns}
    for _ in range(repeats + 1):
        for name, fn in fns.items():
            times[name].append(bp._timed(fn))
    return {name: 1e3 * statistics.median(t[1:]) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--repeats", type=int, default=20, help="timed turns of each")
    p.add_argument("--steps", type=int, default=6, help="timed teacher steps of each")
    p.add_argument("--batch", type=int, default=96, help="crops whose pools are timed (a step: 96)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    calls = pool_calls(args.batch)
    steps = teacher_steps()
    print(
        f"\nthe world teacher's {len(calls)} average pools ({args.batch} crops) and its"
        f" training step, torch threads={torch.get_num_threads()}, medians (interleaved)\n"
    )
    print(
        "| precision | pools: torch ms | tiling ms | ratio | same numbers | step: torch ms"
        " | tiling ms | ratio |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for name, dtype in PRECISIONS.items():
        tensors = pool_tensors(calls, dtype)
        ours = lambda: pools_step(tensors, block_avg_pool2d)  # noqa: E731
        theirs = lambda: pools_step(tensors, F.avg_pool2d)  # noqa: E731
        same = all(torch.equal(a, b) for x, y in zip(ours(), theirs()) for a, b in zip(x, y))
        pools = interleaved({"torch": theirs, "tiling": ours}, args.repeats)
        autocast = None if dtype == torch.float32 else dtype
        step = interleaved({k: (lambda s=s: s(autocast)) for k, s in steps.items()}, args.steps)
        print(
            f"| {name} | {pools['torch']:.1f} | {pools['tiling']:.1f}"
            f" | {pools['tiling'] / pools['torch']:.2f}x | {'yes' if same else 'NO'}"
            f" | {step['torch']:.0f} | {step['tiling']:.0f}"
            f" | {step['tiling'] / step['torch']:.2f}x |"
        )


if __name__ == "__main__":
    main()
