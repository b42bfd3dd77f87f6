#!/usr/bin/env python
"""
Text embeddings of a vocabulary with a CLIP teacher and ViLD's prompt ensemble.

    python tools/precompute_text_embeddings.py --teacher ViT-B/32 \\
        --dataset lvis_v1_val --synonyms --output datasets/metadata/lvis_v1_ViT-B-32.npy
    python tools/precompute_text_embeddings.py --teacher my_clip.pt \\
        --json datasets/lvis/lvis_v1_val.json --output lvis.npy
    python tools/precompute_text_embeddings.py --teacher ViT-B/32 \\
        --names "zebra,red kite,fire hydrant" --output my_vocab.npy   # or --names-file f.txt

Writes OUTPUT (.npy, [C, D] float32, unit rows, in the vocabulary's order: a registered
dataset's contiguous order, a json's category-id order, or the order given) and
OUTPUT with .json (names, templates, teacher, D). Use --single-template for the plain
"a photo of a {}." prompt.
"""

import argparse
import json
import os
import sys

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split

import numpy as np
import torch
from detectron2.data import MetadataCatalog

from vild_d2.data.region_store.layout import file_digest
from vild_d2.teacher import load_clip
from vild_d2.utils.atomic_io import atomic_save_npy, atomic_write_json
from vild_d2.vocabulary.core import dataset_vocabulary
from vild_d2.vocabulary.prompts import SINGLE_TEMPLATE, VILD_TEMPLATES, encode_vocabulary

__all__ = ["vocabulary_from_args", "main"]


def vocabulary_from_args(args):
    """(names, synonyms or None, source description) from --dataset / --json / --names(-file)."""
    if args.dataset:
        vocab = dataset_vocabulary(args.dataset)
        if vocab is None:
            raise SystemExit(
                f"precompute_text_embeddings.py: error: dataset '{args.dataset}' "
                "has no categories yet (is its json present?)"
            )
        synonyms = None
        if args.synonyms:
            json_file = getattr(MetadataCatalog.get(args.dataset), "json_file", None)
            if json_file and os.path.isfile(json_file):
                synonyms = [c.get("synonyms", []) for c in _json_categories(json_file)]
        return vocab.names, synonyms, f"dataset {args.dataset}"
    if args.json:
        cats = _json_categories(args.json)
        synonyms = [c.get("synonyms", []) for c in cats] if args.synonyms else None
        return [c["name"] for c in cats], synonyms, f"json {args.json}"
    if args.names_file:
        with open(args.names_file, encoding="utf-8") as f:
            return [l.strip() for l in f if l.strip()], None, f"file {args.names_file}"
    return [n.strip() for n in args.names.split(",")], None, "--names"


def _json_categories(json_file):
    """The json's categories in id order (the contiguous order of its dataset)."""
    with open(json_file, encoding="utf-8") as f:
        return sorted(json.load(f)["categories"], key=lambda c: c["id"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--teacher", required=True, help="CLIP model name or CLIP-format checkpoint"
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a registered dataset's categories")
    src.add_argument("--json", help="an LVIS/COCO-format json's categories (id order)")
    src.add_argument("--names", help="comma-separated class names")
    src.add_argument("--names-file", help="a text file, one class name per line")
    parser.add_argument("--synonyms", action="store_true", help="average over LVIS 'synonyms' too")
    parser.add_argument("--single-template", action="store_true", help='only "a photo of a {}."')
    parser.add_argument("--output", required=True, help="the .npy to write")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    names, synonyms, source = vocabulary_from_args(args)
    templates = SINGLE_TEMPLATE if args.single_template else VILD_TEMPLATES
    try:
        model, _ = load_clip(args.teacher, device=args.device)
        emb = encode_vocabulary(model, names, templates, synonyms=synonyms, progress=True)
    except (FileNotFoundError, RuntimeError, ValueError) as e:  # VocabularyError is a ValueError
        print(f"precompute_text_embeddings.py: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_save_npy(args.output, emb.numpy().astype(np.float32))
    atomic_write_json(
        os.path.splitext(args.output)[0] + ".json",
        {
            "teacher": args.teacher,
            # compared with the region store's at training start-up (vild_d2/data/build.py)
            **(
                {"teacher_sha256": file_digest(args.teacher)}
                if os.path.isfile(args.teacher)
                else {}
            ),
            "embed_dim": int(emb.shape[1]),
            "num_classes": len(names),
            "source": source,
            "class_names": list(names),
            "templates": list(templates),
            "synonyms": synonyms is not None,
        },
    )
    print(
        f"wrote {args.output}: [{emb.shape[0]}, {emb.shape[1]}] from {source}, "
        f"{len(templates)} templates, teacher {args.teacher}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
