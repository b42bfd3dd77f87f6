#!/usr/bin/env python
"""
Export a trained ViLD / ViLD-ensemble model to TorchScript, with the vocabulary as an
input (a new vocabulary needs no re-export). detectron2's tools/deploy/export_model.py
conventions:

    python tools/export_model.py --config-file configs/shapes_world/vild_R_18_FPN_tiny.yaml \\
        --format torchscript --export-method scripting --output exported/ \\
        MODEL.WEIGHTS output/world/vild/model_final.pth MODEL.DEVICE cpu

Writes OUTPUT/model.ts. Load it anywhere with ``torch.jit.load`` after ``import
torchvision`` (its ops); call ``module(image, class_embeddings)`` — ViLD-ensemble also
takes ``base_mask`` — see vild_d2/export/torchscript.py for the inputs and outputs, or
run it with ``demo/demo.py --torchscript OUTPUT/model.ts``. Tracing records one run on
``--sample-image`` (default: the first image of DATASETS.TEST[0]); scripting needs none.
torch 2.x marks TorchScript deprecated (a FutureWarning) but still supports it.
"""

import argparse
import json
import os
import sys

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from vild_d2.checkpoint.files import check_weights
from vild_d2.checkpoint.strict import load_inference_weights
from vild_d2.config import ConfigError, check_device, load_config
from vild_d2.data.augmentation import build_test_augmentation
from vild_d2.data.images import read_image
from vild_d2.export import ExportError, export_model
from vild_d2.inference import EXPORT_INFO_FILE, export_info
from vild_d2.utils.atomic_io import atomic_write
from vild_d2.vocabulary.embedding_files import VocabularyError

MODEL_FILE = "model.ts"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--format", choices=["torchscript"], default="torchscript")
    p.add_argument("--export-method", choices=["scripting", "tracing"], default="scripting")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--sample-image", default=None, help="an image for tracing")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def _sample_image(cfg, path, device) -> torch.Tensor:
    """The tracing input: ``path`` (or DATASETS.TEST's first image) resized for the test."""
    if path is None:
        if not cfg.DATASETS.TEST:
            raise ExportError("tracing needs --sample-image (DATASETS.TEST is empty)")
        path = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sample image not found: {path}")
    raw = read_image(path, format=cfg.INPUT.FORMAT)
    resized = build_test_augmentation(cfg)[0].get_transform(raw).apply_image(raw)
    return torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float().to(device)


def _load_and_export(args):
    """(config, eager model, exported module); the errors a user's input can cause."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS is empty: name the trained model's checkpoint")
    check_weights(cfg)
    check_device(cfg)
    model = build_model(cfg).eval()
    load_inference_weights(model, cfg.MODEL.WEIGHTS)
    image = None
    if args.export_method == "tracing":
        image = _sample_image(cfg, args.sample_image, model.device)
    return cfg, model, export_model(model, args.export_method, image)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, model, exported = _load_and_export(args)
    except (ConfigError, ExportError, VocabularyError, FileNotFoundError, ValueError) as e:
        print(f"export_model.py: error: {e}", file=sys.stderr)
        return 2
    info = export_info(cfg, args.export_method, model.roi_heads.image_head is not None)
    os.makedirs(args.output, exist_ok=True)
    out = os.path.join(args.output, MODEL_FILE)
    atomic_write(
        out,
        lambda f: torch.jit.save(exported, f, _extra_files={EXPORT_INFO_FILE: json.dumps(info)}),
    )
    print(
        f"wrote {out} ({args.export_method}; inputs: image [3, H, W] in {cfg.INPUT.FORMAT}, resized"
        f" to shortest side {cfg.INPUT.MIN_SIZE_TEST}, class_embeddings [C,"
        f" {cfg.MODEL.VILD.EMBED_DIM}]" + (", base_mask [C] bool" if info["ensemble"] else "") + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
