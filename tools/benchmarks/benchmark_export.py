#!/usr/bin/env python
"""
Two latency ratios per image, each measured in one run on this machine (random weights;
score threshold 0 so that every run sends TEST.DETECTIONS_PER_IMAGE boxes to the mask head):

1. an exported ViLD / ViLD-ensemble (TorchScript, scripting and tracing) vs the same
   model in eager mode (``model.inference(..., do_postprocess=False)``, the exported
   module's work), with an LVIS-sized vocabulary as input (target: <= 1.0x);
2. ViLD (the whole detector) vs the paper's *CLIP on cropped regions* on the same
   proposals: a ViT-B/32-shaped random CLIP encodes each of the RPN's proposals at 1.0x
   and 1.5x (the crops ViLD distils from), which the paper reports as far slower.

    python tools/benchmarks/benchmark_export.py [--images 10 --size 512 --classes 1203 \\
        --crop-images 2 --device cpu]
"""

import argparse
import os
import statistics
import time

import torch

import vild_d2  # noqa: F401  (first: registers ViLD components, imports detectron2 quietly)

# isort: split
from benchmark_models import tiny_model_opts
from detectron2.modeling import build_model

from vild_d2.config import load_config
from vild_d2.export import export_model
from vild_d2.teacher import build_clip
from vild_d2.teacher.region_encoder import encode_regions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "ViLD": "configs/shapes_world/vild_R_18_FPN_tiny.yaml",
    "ViLD-ensemble": "configs/shapes_world/vild_ensemble_R_18_FPN_tiny.yaml",
}


def _median_ms(times) -> float:
    return 1000 * statistics.median(times)


def _timed(fn, device: str) -> float:
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--images", type=int, default=10, help="images for the export comparison")
    p.add_argument(
        "--crop-images", type=int, default=2, help="images for the CLIP-on-crops comparison (slow)"
    )
    p.add_argument("--size", type=int, default=512, help="input side, pixels")
    p.add_argument("--classes", type=int, default=1203, help="vocabulary size C (LVIS: 1203)")
    p.add_argument("--embed-dim", type=int, default=512, help="D (CLIP ViT-B/32: 512)")
    p.add_argument(
        "--max-proposals", type=int, default=0, help="crop at most this many proposals (0: all)"
    )
    p.add_argument("--device", default="cpu")
    return p


def _inputs(args):
    """(random images [3, S, S], a unit-norm vocabulary [C, D], a base mask [C])."""
    g = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 255, (3, args.size, args.size), generator=g).float().to(args.device)
        for _ in range(args.images)
    ]
    vocab = torch.nn.functional.normalize(
        torch.randn(args.classes, args.embed_dim, generator=g), dim=1
    ).to(args.device)
    return images, vocab, (torch.arange(args.classes) % 2 == 0).to(args.device)


def _interleaved_ms(runs: dict, images, device: str) -> dict:
    """Median ms of each run over ``images``, runs interleaved so that drift hits all alike."""
    times = {k: [] for k in runs}
    with torch.no_grad():
        for run in runs.values():  # warm-up (and TorchScript's profiling runs)
            for _ in range(2):
                run(images[0])
        for img in images:
            for k, run in runs.items():
                times[k].append(_timed(lambda: run(img), device))
    return {k: _median_ms(v) for k, v in times.items()}


def compare_exported(args, opts, images, vocab, base_mask):
    """Part 1: the table rows; returns the ViLD model (for part 2)."""
    vild = None
    for name, rel in CONFIGS.items():
        torch.manual_seed(0)
        model = build_model(load_config(os.path.join(ROOT, rel), opts)).eval()
        model.set_vocabulary(vocab, base_mask)
        extra = (base_mask,) if name == "ViLD-ensemble" else ()
        runs = {"eager": lambda img, m=model: m.inference([{"image": img}], do_postprocess=False)}
        for method in ("scripting", "tracing"):
            exported = export_model(model, method, images[0], vocab)
            runs[method] = lambda img, e=exported: e(img, vocab, *extra)
        ms = _interleaved_ms(runs, images, args.device)
        e, s, t = (ms[k] for k in ("eager", "scripting", "tracing"))
        print(f"| {name} | {e:.1f} | {s:.1f} | {t:.1f} | {s / e:.3f}x | {t / e:.3f}x |")
        vild = model if name == "ViLD" else vild
    return vild


def compare_crops(args, vild, images, num_proposals: int) -> None:
    """Part 2: ViLD vs a ViT-B/32-shaped CLIP on its proposals' 1.0x and 1.5x crops."""
    teacher = build_clip(seed=0).to(args.device)  # ViT-B/32's shape
    vild_times, crop_times = [], []
    with torch.no_grad():
        for img in images[: args.crop_images]:
            vild_times.append(
                _timed(lambda: vild.inference([{"image": img}], do_postprocess=False), args.device)
            )
            batched = vild.preprocess_image([{"image": img}])
            proposals, _ = vild.proposal_generator(batched, vild.backbone(batched.tensor), None)
            boxes = proposals[0].proposal_boxes.tensor
            rgb = img.flip(0)  # the detector's BGR -> the teacher's RGB
            crop_times.append(
                _timed(lambda: encode_regions(teacher, rgb, boxes, (1.0, 1.5)), args.device)
            )
    v, c = _median_ms(vild_times), _median_ms(crop_times)
    print("| method | ms per image | vs ViLD |")
    print("|---|---:|---:|")
    print(f"| ViLD (whole detector: backbone, RPN, heads, masks) | {v:.1f} | 1.0x |")
    print(
        f"| CLIP on cropped regions ({2 * num_proposals} crops, encoder only) | {c:.1f} |"
        f" {c / v:.1f}x |"
    )


def main() -> None:
    args = build_parser().parse_args()
    common, vild_opts = tiny_model_opts(args.classes, args.embed_dim, args.size, args.device)
    images, vocab, base_mask = _inputs(args)
    print(
        f"\n1. exported vs eager, per image: {args.images} images of {args.size}x{args.size},"
        f" C={args.classes}, D={args.embed_dim}, device={args.device}, torch"
        f" threads={torch.get_num_threads()}\n"
    )
    print("| model | eager ms | scripted ms | traced ms | scripted / eager | traced / eager |")
    print("|---|---:|---:|---:|---:|---:|")
    vild = compare_exported(args, common + vild_opts, images, vocab, base_mask)
    num_proposals = vild.proposal_generator.post_nms_topk[False]
    if args.max_proposals:
        num_proposals = min(num_proposals, args.max_proposals)
        vild.proposal_generator.post_nms_topk[False] = num_proposals
    print(
        f"\n2. ViLD vs CLIP on cropped regions, per image: the same {num_proposals} RPN proposals,"
        " crops at 1.0x and 1.5x through a ViT-B/32-shaped random CLIP;"
        f" {args.crop_images} images\n"
    )
    compare_crops(args, vild, images, num_proposals)


if __name__ == "__main__":
    main()
