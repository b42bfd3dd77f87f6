#!/usr/bin/env python
"""
Convert a checkpoint of the official ViLD release (tensorflow/tpu projects/vild: ViLD or
ViLD-ensemble, ResNet-50 or ResNet-152) into a detectron2 checkpoint, its vocabulary and
config, without TensorFlow:

    python tools/convert_official_checkpoint.py resnet50_vild_ensemble.tar.gz \\
        --output converted/vild_ensemble_R_50

SOURCE: the downloaded .tar.gz, an unpacked folder, a checkpoint prefix
(``.../model.ckpt-180000``) or its ``.index`` file, or a .npz of variables. ViLD vs
ViLD-ensemble and the depth are read from the variables. Writes OUTPUT/model_final.pth,
OUTPUT/class_embeddings.npy (the checkpoint's text embeddings, one row per class),
OUTPUT/config.yaml (configs/LVIS-OV-official with those two set) and
OUTPUT/conversion.json. Then, e.g.:

    python demo/demo.py --config-file OUTPUT/config.yaml --input image.jpg --output out/ \\
        --vocabulary lvis_v1_val
    python train_net.py --config-file OUTPUT/config.yaml --eval-only

See docs/official_checkpoints.md.
"""

import argparse
import os
import sys

import vild_d2  # noqa: F401  (first: registers the architecture, imports detectron2 quietly)

# isort: split

from vild_d2.checkpoint import CheckpointFormatError, ConversionError, convert_official_checkpoint
from vild_d2.config import ConfigError
from vild_d2.modeling.text_embeddings import VocabularyError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("source", help="the official checkpoint (tar.gz, folder, prefix, .index, .npz)")
    p.add_argument("--output", required=True, help="output folder (created)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        report = convert_official_checkpoint(
            args.source, args.output, CONFIGS, args.overwrite, progress=not args.no_progress
        )
    except (CheckpointFormatError, ConversionError, ConfigError, VocabularyError, OSError) as e:
        print(f"convert_official_checkpoint.py: error: {e}", file=sys.stderr)
        return 2
    arch = report["architecture"]
    print(
        f"{report['model']}: {report['variables']} variables -> {report['weights']} tensors "
        f"({report['values']:,} values); vocabulary {arch['num_classes']} x {arch['embed_dim']}"
    )
    print(
        f"wrote {os.path.abspath(args.output)}/: model_final.pth, class_embeddings.npy, "
        "config.yaml"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
