#!/usr/bin/env python
"""
Inference time per image of the official ViLD architecture (configs/LVIS-OV-official,
ResNet-50, full size) as vild_d2 runs a converted checkpoint, against the same model run
the way it was up to commit 69ec748 (NCHW convolutions, detectron2's detection selection)
and against the project's own LVIS ViLD (configs/LVIS-OV), all with random weights,
measured in one run on this machine, the models taking turns on every image. The official
model's weights come through the converter from random values (as a fresh initialisation
draws them) of the released graph's variable list when the shared data folder has it
(else it is initialised at random: the same compute).

The official TensorFlow graph is not run here (this project ships neither TensorFlow nor
the official code). Its row is derived from a recorded measurement instead, and says so:
on this project's 2-core CPU, the same weights and images, 2 threads each, interleaved,
the converted model as at 69ec748 took 1.13x the official graph's median wall time
(issue 39). So TF's time is estimated as the 69ec748 row / 1.13.

    python tools/benchmarks/benchmark_official.py [--images 4 --size 1024 --classes 1203 \\
        --proposals 1000 --detections 300]

Inputs are [3, size, size] tensors given to the model directly (the test resize of the
data loader, TF1 or PIL, is not timed); with score threshold 0 every model keeps
TEST.DETECTIONS_PER_IMAGE detections (the table says how many they kept).
"""

import argparse
import os
import statistics
import types

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

import vild_d2  # noqa: F401  (registers ViLD components)

# isort: split
from benchmark_images import SHARED
from benchmark_models import random_images, time_inference, tiny_model_opts

from vild_d2.checkpoint import convert_variables, infer_architecture
from vild_d2.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERTED = "official ViLD, converted"
AS_AT_69EC748 = "the same as at 69ec748"
TF_GRAPH = "official TF graph (estimate)"
OWN = "vild_d2 ViLD (LVIS-OV)"
CONFIGS = {
    CONVERTED: "configs/LVIS-OV-official/vild_R_50_FPN.yaml",
    AS_AT_69EC748: "configs/LVIS-OV-official/vild_R_50_FPN.yaml",
    OWN: "configs/LVIS-OV/vild_R_50_FPN.yaml",
}
# recorded (issue 39): converted model as at 69ec748 / official TF graph, median wall time,
# same weights and images, 2 threads each, interleaved, on this project's 2-core CPU
RECORDED_69EC748_OVER_TF = 1.13
VARIABLES = os.path.join(SHARED, "official_vild", "variables_r50_vild.txt")


def _official_weights(model, classes: int) -> str:
    """Load converted random values of the released R50 ViLD graph; say where they came from."""
    if not os.path.isfile(VARIABLES):
        return "random initialisation (no variable list at " + VARIABLES + ")"
    shapes = {}
    with open(VARIABLES) as f:
        for line in f:
            name, shape, _ = line.rstrip("\n").split("\t")
            shapes[name] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    shapes["frcnn_layer_0/fast_rcnn_head/class-predict/kernel"] = (512, classes)
    rng = np.random.default_rng(0)

    def value(name):  # what a freshly initialised network holds: BN as identity, He kernels
        shape = shapes[name]
        if name.endswith(("gamma", "moving_variance")):
            return np.ones(shape)
        if name.endswith(("beta", "moving_mean", "bias")):
            return np.zeros(shape)
        return rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)

    state, _, arch = convert_variables(shapes, value)
    assert infer_architecture(shapes).name == arch.name == "vild_R_50_FPN"
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    return f"converted from random values of {os.path.basename(VARIABLES)}"


def _models(args):
    common, vild = tiny_model_opts(args.classes, 512, args.size, args.device)
    models, source = {}, ""
    for name, rel in CONFIGS.items():
        torch.manual_seed(0)
        opts = (
            common + vild + ["MODEL.WEIGHTS", "", "TEST.DETECTIONS_PER_IMAGE", str(args.detections)]
        )
        opts += ["MODEL.RPN.POST_NMS_TOPK_TEST", str(args.proposals)]
        opts += [
            "MODEL.VILD.TEST_TEXT_EMBEDDINGS",
            vild[vild.index("MODEL.VILD.TRAIN_TEXT_EMBEDDINGS") + 1],
        ]
        if name != OWN:
            opts += ["MODEL.FPN.SIZE_DIVISIBILITY", str(args.size)]
        if name == AS_AT_69EC748:
            opts += ["MODEL.CHANNELS_LAST", "False"]
        models[name] = build_model(load_config(os.path.join(ROOT, rel), opts)).eval()
        if name != OWN:
            source = _official_weights(models[name], args.classes)
    predictor = models[AS_AT_69EC748].roi_heads.box_predictor  # detectron2's selection
    predictor.inference = types.MethodType(FastRCNNOutputLayers.inference, predictor)
    return models, source


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--size", type=int, default=1024, help="input side, pixels")
    p.add_argument("--classes", type=int, default=1203, help="vocabulary size C")
    p.add_argument("--proposals", type=int, default=1000, help="RPN.POST_NMS_TOPK_TEST")
    p.add_argument("--detections", type=int, default=300, help="TEST.DETECTIONS_PER_IMAGE")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    models, source = _models(args)
    counts = {}

    def check(name, out):  # as many detections, so that both mask heads do the same work
        counts[name] = len(out[0]["instances"])

    times = time_inference(models, random_images(args.images, args.size), args.device, check)
    medians = {name: statistics.median(t) for name, t in times.items()}
    medians[TF_GRAPH] = medians[AS_AT_69EC748] / RECORDED_69EC748_OVER_TF
    print(
        f"\ninference per image, {args.images} images of {args.size}x{args.size}, C={args.classes},"
        f" {args.proposals} proposals,"
        f" ResNet-50 FPN, device={args.device}, torch threads={torch.get_num_threads()};"
        f" official weights: {source}. TensorFlow is not run here: the TF row is the"
        f" 69ec748 row / {RECORDED_69EC748_OVER_TF} (a recorded ratio, see the docstring)"
    )
    if (args.size, args.classes, args.proposals, args.detections) != (1024, 1203, 1000, 300):
        print(
            "(the ratio was recorded at 1024 px, C 1203, 1000 proposals, 300 detections:"
            " at these settings the TF row means nothing)"
        )
    print()
    print(f"| {'model':<28} | median s | vs TF graph | detections |")
    print(f"|{'-' * 30}|----------|-------------|------------|")
    for name in (CONVERTED, AS_AT_69EC748, TF_GRAPH, OWN):
        shown = str(counts[name]) if name in counts else "-"
        ratio = medians[name] / medians[TF_GRAPH]
        print(f"| {name:<28} | {medians[name]:8.2f} | {ratio:10.3f}x | {shown:>10} |")


if __name__ == "__main__":
    main()
