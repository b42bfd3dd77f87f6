#!/usr/bin/env python
"""
Convert a checkpoint of the official ViLD release (tensorflow/tpu projects/vild: ViLD or
ViLD-ensemble, ResNet-50 or ResNet-152) into a detectron2 checkpoint, its vocabulary and
config, without TensorFlow:

    python tools/convert_official_checkpoint.py --download r50_vild_ensemble
    python tools/convert_official_checkpoint.py resnet50_vild_ensemble.tar.gz \\
        --output converted/vild_ensemble_R_50

--download NAME (r50_vild, r50_vild_ensemble, r152_vild, r152_vild_ensemble) fetches the
release's .tar.gz with a progress bar into a cache folder (--cache-dir, default
$VILD_D2_CACHE/official or ~/.cache/vild_d2/official; an interrupted download resumes when
the same command runs again) and converts it into --output (default converted/NAME).

SOURCE: the downloaded .tar.gz, an unpacked folder, a checkpoint prefix
(``.../model.ckpt-180000``) or its ``.index`` file, or a .npz of variables. ViLD vs
ViLD-ensemble and the depth are read from the variables. Writes OUTPUT/model_final.pth,
OUTPUT/class_embeddings.npy (the checkpoint's text embeddings, one row per class, and the
.json beside it naming the CLIP that made them),
OUTPUT/config.yaml (configs/LVIS-OV-official with those two set) and
OUTPUT/conversion.json. Then, e.g.:

    python demo/demo.py --model OUTPUT --input image.jpg --output out/ \\
        --custom-vocabulary "red kite,teapot"
    python train_net.py --config-file OUTPUT/config.yaml --eval-only

See docs/official_checkpoints.md.
"""

import argparse
import os
import sys

import vild_d2  # noqa: F401  (first: registers the architecture, imports detectron2 quietly)

# isort: split

from vild_d2.checkpoint import CheckpointFormatError, ConversionError, convert_official_checkpoint
from vild_d2.checkpoint.download import RELEASE_URL, RELEASED, DownloadError, download_release
from vild_d2.config import ConfigError
from vild_d2.vocabulary.embedding_files import VocabularyError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "source", nargs="?", help="the official checkpoint (tar.gz, folder, prefix, .index, .npz)"
    )
    source.add_argument("--download", choices=sorted(RELEASED), help="a released checkpoint")
    p.add_argument("--output", help="output folder (created; with --download: converted/NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cache-dir", help="where --download keeps the .tar.gz")
    p.add_argument(
        "--ema",
        action="store_true",
        help="convert the ExponentialMovingAverage shadows of the weights, not the weights",
    )
    p.add_argument("--mirror", default=RELEASE_URL, help="--download from this base URL (a mirror)")
    args = p.parse_args(argv)
    if args.output is None and args.download is None:
        p.error("--output is required with a SOURCE")
    output = args.output or os.path.join("converted", args.download)
    try:
        if args.download:
            args.source = download_release(
                args.download, args.cache_dir, args.mirror, progress=not args.no_progress
            )
        report = convert_official_checkpoint(
            args.source, output, CONFIGS, args.overwrite, not args.no_progress, args.ema
        )
    except (
        CheckpointFormatError, ConversionError, ConfigError, VocabularyError, DownloadError,
        OSError,
    ) as e:  # fmt: skip
        print(f"convert_official_checkpoint.py: error: {e}", file=sys.stderr)
        return 2
    arch = report["architecture"]
    print(
        f"{report['model']}: {report['variables']} variables -> {report['weights']} tensors "
        f"({report['values']:,} values); vocabulary {arch['num_classes']} x {arch['embed_dim']}"
    )
    print(f"wrote {os.path.abspath(output)}/: model_final.pth, class_embeddings.npy, config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
