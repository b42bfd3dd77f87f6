#!/usr/bin/env python
"""
Training step time in bfloat16 autocast against float32, per training stage of the world
pipeline, measured in one process on this machine: the two precisions take turns on the
same synthetic batches (forward, backward, fused SGD step; no data loading), and each
step's floating-point operations (torch's FlopCounterMode, one step) give the achieved
GFLOP/s against this CPU's float32 and bfloat16 GEMM rates, measured in the same run. A
profiled step of each splits the time in two: the convolutions and matrix products, which
bfloat16 speeds up, and every other op (NMS, RoIAlign, pooling, norms, casts, the
optimiser), which costs about the same in both and bounds the stage's ratio.

    python tools/benchmarks/benchmark_precision.py [--steps 6 --threads 0]

Stages, with the world configs (configs/shapes_world) and random weights:
  detector       the base and supervised Mask R-CNN (train_net.py), 2 images of 256 px
  ViLD e2e       ViLD end to end (train_net.py, text loss + L1 on 32 regions per image)
  ViLD heads     ViLD's box head and predictor on cached RoI features (64 proposals and
                 32 regions per image, 8 images: tools/train_heads_on_cached_features.py)
  image head     ViLD-ensemble's image head alone on the regions' cached features
  teacher        the world's CLIP, one contrastive step on 96 crops
  pretraining    the RoI classifier of tools/pretrain_world_detector.py, 8 images
The target of issue 35: every stage at <= 0.65x its float32 step.
"""

import argparse
import os
import re
import statistics
import time

import torch
import torch.nn.functional as F

import vild_d2  # noqa: F401  (first: registers ViLD components, imports detectron2 quietly)

# isort: split
from benchmark_models import tiny_model_opts
from benchmark_training import synthetic_batch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from vild_d2.config import load_config
from vild_d2.engine.optimizers import fused_if_supported
from vild_d2.engine.precision import autocast
from vild_d2.layers import use_block_avg_pools
from vild_d2.teacher import build_clip
from vild_d2.world.imagenet import RoIClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORLD = os.path.join(ROOT, "configs", "shapes_world")
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def gemm_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a [size, size] matrix product in ``dtype`` on this CPU (the best of 5)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


CHANNELS_LAST = False  # --channels-last: every model's 4-D weights in NHWC memory


def _sgd_step(model, loss_fn):
    """One step of ``model`` (parameters) on ``loss_fn()`` (a scalar or a dict of them)."""
    if CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = fused_if_supported(torch.optim.SGD, params, lr=1e-4)  # as the trainings'

    def step(dtype):
        with autocast("cpu", dtype):
            out = loss_fn()
        loss = sum(out.values()) if isinstance(out, dict) else out
        optimizer.zero_grad()
        loss.float().backward()
        optimizer.step()

    return step


def _world_cfg(name: str, args, vild: bool):
    common, vild_opts = tiny_model_opts(args.classes, args.dim, args.size, "cpu")
    extra = vild_opts + ["MODEL.VILD.NUM_DISTILL_REGIONS", str(args.regions)] if vild else []
    return load_config(os.path.join(WORLD, name), common + extra)


def _end_to_end(config: str, vild: bool):
    """A train_net.py step of the world config ``config`` on one synthetic batch."""

    def build(args):
        torch.manual_seed(0)
        model = build_model(_world_cfg(config, args, vild)).train()
        batch = synthetic_batch(0, args.images, args.size, args.regions, args.dim, args.classes)
        return _sgd_step(model, lambda: model(batch))

    return build


def _cached_features(model, args, rows: int, seed: int) -> torch.Tensor:
    """[rows, C, S, S] random pooled RoI features of ``model``'s box pooler's shape."""
    channels = model.backbone.output_shape()["p2"].channels
    size = model.roi_heads.box_pooler.output_size[0]
    return torch.randn(rows, channels, size, size, generator=torch.Generator().manual_seed(seed))


def vild_heads_step(args):
    """ViLD's box head + predictor on cached features: 64 proposals, 32 regions an image."""
    torch.manual_seed(0)
    model = build_model(_world_cfg("vild_R_18_FPN_tiny.yaml", args, vild=True)).train()
    n, m = 64 * args.cached_images, 32 * args.cached_images
    features, regions = _cached_features(model, args, n, 1), _cached_features(model, args, m, 2)
    g = torch.Generator().manual_seed(3)
    proposals = Instances((args.size, args.size))
    xy = torch.rand(n, 2, generator=g) * args.size / 2
    proposals.proposal_boxes = Boxes(torch.cat([xy, xy + 32], 1))
    proposals.gt_boxes = Boxes(torch.cat([xy + 2, xy + 30], 1))
    proposals.gt_classes = torch.randint(0, args.classes + 1, (n,), generator=g)
    teacher = F.normalize(torch.randn(m, args.dim, generator=g), dim=1)
    heads = model.roi_heads
    return _sgd_step(
        heads, lambda: heads.pooled_box_losses(features, [proposals], regions, teacher)
    )


def image_head_step(args):
    """ViLD-ensemble's image head alone on 32 cached regions an image."""
    torch.manual_seed(0)
    model = build_model(_world_cfg("vild_ensemble_R_18_FPN_tiny.yaml", args, vild=True)).train()
    m = 32 * args.cached_images
    regions = _cached_features(model, args, m, 2)
    teacher = F.normalize(torch.randn(m, args.dim, generator=torch.Generator().manual_seed(3)), 1)
    heads = model.roi_heads
    return _sgd_step(heads.image_head, lambda: heads.image_head_losses(regions, teacher))


def teacher_step(args, tiled_pools: bool = True):
    """
    The world's CLIP (tools/train_world_teacher.py's shape): one step on 96 crops, with its
    average pools replaced as in training (``tiled_pools``) or torch's own.
    """
    import clip

    from vild_d2.world.teacher_training import WORLD_TEACHER_SHAPE, symmetric_infonce

    model = build_clip(seed=0, **WORLD_TEACHER_SHAPE).train()
    if tiled_pools:
        use_block_avg_pools(model)  # as train_clip_on_crops
    res = model.visual.input_resolution
    g = torch.Generator().manual_seed(0)
    crops = torch.randn(96, 3, res, res, generator=g)
    targets = torch.randint(0, args.classes, (96,), generator=g)
    tokens = clip.tokenize([f"a photo of a class {i}" for i in range(args.classes)], 24)

    def loss():
        img = F.normalize(model.encode_image(crops), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        return symmetric_infonce(model.logit_scale.exp().clamp(max=100) * img @ txt.t(), targets)

    return _sgd_step(model, loss)


def pretraining_step(args):
    """tools/pretrain_world_detector.py's RoI classifier: 128 crops of 64 px, 8 shapes."""
    torch.manual_seed(0)
    model = RoIClassifier(_world_cfg("base_R_18_FPN_tiny.yaml", args, vild=False), 8).train()
    g = torch.Generator().manual_seed(0)
    crops = torch.randn(128, 3, 64, 64, generator=g)
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 64.0]])] * 128
    labels = torch.randint(0, 8, (128,), generator=g)
    return _sgd_step(model, lambda: F.cross_entropy(model(crops, boxes), labels))


STAGES = {
    "detector (train_net)": _end_to_end("mask_rcnn_R_18_FPN_tiny.yaml", vild=False),
    "ViLD end to end (train_net)": _end_to_end("vild_R_18_FPN_tiny.yaml", vild=True),
    "ViLD heads on cached features": vild_heads_step,
    "ensemble image head": image_head_step,
    "teacher": teacher_step,
    "pretraining": pretraining_step,
}


def step_flops(step) -> int:
    """Floating-point operations of one float32 ``step`` (forward, backward)."""
    with FlopCounterMode(display=False) as counter:
        step(None)
    return counter.get_total_flops()


DENSE_OPS = re.compile(r"conv|^aten::(mm|addmm|bmm|baddbmm)$|scaled_dot_product")


def dense_and_other(step, dtype, repeats: int = 2) -> tuple:
    """
    (ms per ``step`` in convolutions and matrix products, ms in every other op): the
    profiler's self CPU time of ``repeats`` steps in ``dtype``.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step(dtype)
    dense = other = 0.0
    for event in prof.key_averages():
        if DENSE_OPS.search(event.key):
            dense += event.self_cpu_time_total
        else:
            other += event.self_cpu_time_total
    return dense / 1000 / repeats, other / 1000 / repeats


def measure(steps: dict, repeats: int) -> dict:
    """name -> {precision: [seconds per step]}, the precisions taking turns (2 warm-ups)."""
    times = {name: {p: [] for p in PRECISIONS} for name in steps}
    with EventStorage():  # detectron2's losses log their statistics
        for i in range(repeats + 2):
            for name, step in steps.items():
                for precision, dtype in PRECISIONS.items():
                    seconds = _timed(lambda: step(dtype))
                    if i >= 2:
                        times[name][precision].append(seconds)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per stage and precision")
    p.add_argument("--images", type=int, default=2, help="images per end-to-end batch")
    p.add_argument("--size", type=int, default=256, help="end-to-end input side, pixels")
    p.add_argument("--regions", type=int, default=32, help="distillation regions per image")
    p.add_argument("--cached-images", type=int, default=8, help="images per cached batch")
    p.add_argument("--dim", type=int, default=64, help="D (the world teacher's)")
    p.add_argument("--classes", type=int, default=48, help="vocabulary size C")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights in every model")
    args = p.parse_args()
    global CHANNELS_LAST
    CHANNELS_LAST = args.channels_last
    if args.threads:
        torch.set_num_threads(args.threads)
    rates = {name: gemm_rate(dtype or torch.float32) for name, dtype in PRECISIONS.items()}
    steps = {name: build(args) for name, build in STAGES.items()}
    with EventStorage():
        flops = {name: step_flops(step) for name, step in steps.items()}
    times = measure(steps, args.steps)
    with EventStorage():
        split = {
            n: {p: dense_and_other(s, d) for p, d in PRECISIONS.items()} for n, s in steps.items()
        }
    print(
        f"\ntraining step per stage, bfloat16 autocast vs float32, median of {args.steps} steps"
        f" each (interleaved), torch threads={torch.get_num_threads()},"
        f" {'channels-last' if CHANNELS_LAST else 'NCHW'} weights; GEMM on this CPU:"
        f" float32 {rates['float32']:.0f} GFLOP/s, bfloat16 {rates['bfloat16']:.0f} GFLOP/s\n"
    )
    print(
        "| stage | GFLOP per step | fp32 ms | bf16 ms | bf16 / fp32 | fp32 GFLOP/s | bf16 GFLOP/s"
        " | conv and matmul: bf16 / fp32 | other ops, ms: fp32, bf16 | floor |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, by_precision in times.items():
        fp32, bf16 = (statistics.median(by_precision[p]) for p in PRECISIONS)
        (dense32, other32), (dense16, other16) = (split[name][p] for p in PRECISIONS)
        g = flops[name] / 1e9
        print(
            f"| {name} | {g:.1f} | {1000 * fp32:.0f} | {1000 * bf16:.0f} | {bf16 / fp32:.2f}x"
            f" | {g / fp32:.0f} | {g / bf16:.0f} | {dense16 / dense32:.2f}x"
            f" | {other32:.0f}, {other16:.0f} | {other16 / (1000 * fp32):.2f}x |"
        )
    print(
        "\nconv and matmul, other ops: the profiler's self CPU time over 2 more steps each;"
        " floor: the bf16 / fp32 ratio if bfloat16 made every convolution and matrix product"
        " free (the other ops' bf16 ms over the fp32 step)"
    )


if __name__ == "__main__":
    main()
