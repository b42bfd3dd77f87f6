#!/usr/bin/env python
"""
How well a trained ViLD student fits its teacher on its own distillation regions, and how
well its frozen features allow (a probe trained on them for each of ``--probe-epochs``).

    python tools/distillation_fit.py --config-file output/world/vild/config.yaml \\
        --images 300 --probe-epochs 1,2,5,10,30 MODEL.WEIGHTS output/world/vild/model_final.pth

The regions are those of ``DATASETS.REGION_STORE_TRAIN`` for the first ``--images`` images
of the config's first training dataset; the vocabulary is ``MODEL.VILD.TRAIN_TEXT_EMBEDDINGS``.
Prints a markdown table (the top-1 agreement and the L1 of the student, then of each probe
on the two thirds of the regions it was trained on and on the held-out third); ``--output``
also writes it as json. See vild_d2/evaluation/distillation_fit.py.
"""

import argparse
import sys

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from vild_d2.checkpoint.files import check_weights
from vild_d2.config import ConfigError, load_config
from vild_d2.data.build import open_training_store
from vild_d2.data.region_store import RegionStoreError
from vild_d2.evaluation.distillation_fit import distilled_regions, fit_metrics, probe_fit
from vild_d2.utils.atomic_io import atomic_write_json
from vild_d2.vocabulary.embedding_files import load_text_embeddings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, help="the trained model's config")
    p.add_argument("--images", type=int, default=300, help="training images whose regions count")
    p.add_argument(
        "--probe-epochs", default="30", help="comma-separated epoch counts, one probe each"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", help="also write the numbers to this json file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def _model_and_inputs(args):
    """(cfg, the student in eval mode, its regions' dataset dicts, the store, the vocabulary)."""
    cfg = load_config(args.config_file, ["MODEL.DEVICE", args.device, *args.opts])
    check_weights(cfg)
    if not cfg.DATASETS.REGION_STORE_TRAIN or cfg.MODEL.VILD.IMAGE_LOSS_WEIGHT <= 0:
        raise ConfigError(
            f"{args.config_file}: not a distilled model (DATASETS.REGION_STORE_TRAIN is empty "
            "or MODEL.VILD.IMAGE_LOSS_WEIGHT is 0)"
        )
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[: args.images]
    store = open_training_store(cfg, dicts)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    text = load_text_embeddings(
        cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS,
        embed_dim=cfg.MODEL.VILD.EMBED_DIM,
        config_key="MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
    )
    return cfg, model, dicts, store, text


def _cells(fit: dict) -> str:
    return f"{fit['top1_agreement']:.1f} | {fit['l1']:.3f}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        epochs = [int(e) for e in args.probe_epochs.split(",") if e.strip()]
        cfg, model, dicts, store, text = _model_and_inputs(args)
    except (ConfigError, RegionStoreError, ValueError) as e:
        sys.exit(f"distillation_fit.py: error: {e}")
    num_regions = cfg.MODEL.VILD.NUM_DISTILL_REGIONS
    regions = distilled_regions(cfg, model, dicts, store, num_regions)
    found = {
        "regions": len(regions.teacher),
        "student": fit_metrics(regions.student, regions.teacher, text),
    }
    print(f"{len(dicts)} images, {len(regions.teacher)} regions (M = {num_regions})\n")
    print("| who | top-1 agreement, % | L1 | held out: top-1, % | held out: L1 |")
    print("|---|---:|---:|---:|---:|")
    print(f"| student | {_cells(found['student'])} | | |")
    for n in epochs:
        probe = probe_fit(regions, text, epochs=n)
        found[f"probe_{n}_epochs"] = probe
        name = f"probe, {n} epoch{'s' if n != 1 else ''}"
        print(f"| {name} | {_cells(probe['train'])} | {_cells(probe['held_out'])} |", flush=True)
    if args.output:
        atomic_write_json(args.output, found)
    return found


if __name__ == "__main__":
    main()
