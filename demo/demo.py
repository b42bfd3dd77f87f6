#!/usr/bin/env python
"""
Detect any vocabulary in your own images with a trained ViLD model; writes a picture per
image and one COCO-results json (with class names).

    python demo/demo.py --config-file configs/LVIS-OV/vild_R_50_FPN.yaml \\
        --input img.jpg photos/ "shots/*.png" --output out/ \\
        [--vocabulary lvis | --custom-vocabulary "cat,hat,red car" --teacher ViT-B/32 |
         --vocabulary-file emb.npy [--vocabulary-names names.txt] |
         --nouns "mug,bowl" --attributes "red,blue" --teacher ViT-B/32] \\
        [--confidence-threshold 0.5] [--device cpu] [--opts MODEL.WEIGHTS model.pth ...]

    python demo/demo.py --torchscript model.ts --vocabulary-file emb.npy --input ... --output ...
    python demo/demo.py --model converted/r50_vild_ensemble --input img.jpg --output out/ \\
        --custom-vocabulary "red kite,mug"

``--model`` takes a model folder (a trained model's output folder or a converted checkpoint's:
config.yaml + model_final.pth), which also names the ``--teacher`` for custom words.

Without a vocabulary flag the config's test vocabulary is used. ``--custom-vocabulary`` and
``--nouns``/``--attributes`` embed the names with the CLIP ``--teacher`` that made the
training vocabulary (ViLD's 63 prompts); nouns x attributes are scored
p(noun) * p(attribute) (the paper's systematic expansion).
"""

import argparse
import glob
import json
import os
import sys

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image
from tqdm import tqdm

from vild_d2.config import ConfigError, load_config
from vild_d2.data.image_check import check_images
from vild_d2.data.images import read_image
from vild_d2.inference import OpenVocabularyPredictor
from vild_d2.inference.drawing import draw_detections
from vild_d2.inference.model_folder import ModelFolder
from vild_d2.utils.atomic_io import DiskFullError, atomic_folder
from vild_d2.utils.output_folder import check_output_folder, mark_output_folder
from vild_d2.vocabulary.embedding_files import (
    VocabularyError,
    evaluation_embeddings_file,
    evaluation_vocabulary,
)
from vild_d2.vocabulary.user import (
    custom_vocabulary,
    dataset_vocabulary_embeddings,
    expanded_vocabulary,
    file_vocabulary,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TOOL = "demo.py"  # the name its output folders carry (vild_d2.utils.output_folder)
RESULTS_FILE = "results.json"  # in --output: COCO results (+ "category_name", "file_name")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--config-file", help="the model's config (weights: MODEL.WEIGHTS in --opts or the file)"
    )
    model.add_argument("--torchscript", help="a model exported by tools/export_model.py")
    model.add_argument(
        "--model", help="a model folder (config.yaml + model_final.pth; it names its teacher)"
    )
    p.add_argument("--input", nargs="+", required=True, help="images, folders or glob patterns")
    p.add_argument("--output", required=True, help="folder for the pictures and results.json")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an --output folder that demo.py wrote before, as a whole",
    )
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument(
        "--vocabulary",
        help=(
            "lvis, coco, shapes_world or a registered dataset's name (its "
            "classes; its embeddings: the builtin file or --vocabulary-file)"
        ),
    )
    vocab.add_argument(
        "--custom-vocabulary", help='comma-separated class names, e.g. "cat,hat,red car"'
    )
    vocab.add_argument("--nouns", help="comma-separated nouns, combined with --attributes")
    p.add_argument(
        "--vocabulary-file",
        help=(
            "a [C, D] .npy/.pt of text embeddings (alone, its names come from "
            "--vocabulary-names or the .json beside it)"
        ),
    )
    p.add_argument(
        "--vocabulary-names", help="text file, one class name per line (with --vocabulary-file)"
    )
    p.add_argument("--attributes", help="comma-separated attributes (with --nouns)")
    p.add_argument("--teacher", help="CLIP model name or checkpoint that embeds custom names")
    p.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="draw and keep detections above it"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ..."
    )
    return p


def expand_inputs(patterns):
    """Image paths in the given order (folders and globs sorted); FileNotFoundError if none."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(pattern, f)
                for f in os.listdir(pattern)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise FileNotFoundError(
                    f"--input {pattern}: a folder without images ({', '.join(IMAGE_EXTENSIONS)})"
                )
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(glob.glob(pattern))
            if not found:
                raise FileNotFoundError(
                    f"--input {pattern}: no such image, folder or matching file"
                )
        paths += found
    return paths


def resolve_vocabulary(args, cfg, embed_dim: int, device: str):
    if args.attributes and not args.nouns:
        raise VocabularyError("--attributes needs --nouns")
    if args.vocabulary_file and (args.nouns or args.custom_vocabulary is not None):
        raise VocabularyError(
            "--vocabulary-file goes alone or with --vocabulary, not with custom names"
        )
    if args.vocabulary_names and not args.vocabulary_file:
        raise VocabularyError("--vocabulary-names names the rows of --vocabulary-file")
    if args.nouns:
        if not args.attributes:
            raise VocabularyError("--nouns needs --attributes")
        return expanded_vocabulary(args.nouns, args.attributes, args.teacher, embed_dim, device)
    if args.custom_vocabulary is not None:
        return custom_vocabulary(args.custom_vocabulary, args.teacher, embed_dim, device)
    if args.vocabulary:
        return dataset_vocabulary_embeddings(args.vocabulary, embed_dim, args.vocabulary_file)
    if args.vocabulary_file:
        return file_vocabulary(args.vocabulary_file, embed_dim, args.vocabulary_names)
    if cfg is None or not cfg.DATASETS.TEST:
        raise VocabularyError(
            "no vocabulary: give --vocabulary, --vocabulary-file, --custom-vocabulary or "
            "--nouns/--attributes (an exported model has none of its own)"
        )

    vocab = evaluation_vocabulary(cfg, 0)
    vocab.source = f"{cfg.DATASETS.TEST[0]} ({evaluation_embeddings_file(cfg, 0)[0]})"
    return vocab


def _inputs(args, paths) -> list:
    """Every file or folder the run reads: --output may neither be, hold nor lie inside one."""
    named = [args.config_file, args.torchscript, args.model, args.vocabulary_file]
    named += [args.vocabulary_names, args.teacher]
    return [p for p in args.input + paths + named if p]


def picture_names(paths):
    """One output picture name per input: its file stem, made unique with a counter."""
    seen, names = {}, []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        names.append(f"{stem}.png" if k == 0 else f"{stem}_{k}.png")
    return names


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        paths = expand_inputs(args.input)
        check_output_folder(args.output, TOOL, _inputs(args, paths), args.overwrite)
        # every pixel of every input read first: a bad file fails before anything is written
        check_images([{"file_name": p} for p in paths], what="input images", decode=True)
        if args.confidence_threshold < 0 or args.confidence_threshold > 1:
            raise ValueError(f"--confidence-threshold {args.confidence_threshold} is not in [0, 1]")
        cfg = None
        if args.model:
            folder = ModelFolder.open(args.model)
            args.teacher = args.teacher or folder.teacher
            cfg = load_config(folder.config_file, folder.config_opts + list(args.opts))
        elif args.config_file:
            cfg = load_config(args.config_file, args.opts)
        if cfg is not None:
            cfg.freeze()
            predictor = OpenVocabularyPredictor(cfg, device=device)
        else:
            if args.opts:
                raise ValueError(
                    "--opts only applies with --config-file (an exported model is fixed)"
                )
            predictor = OpenVocabularyPredictor(torchscript=args.torchscript, device=device)
        vocabulary = resolve_vocabulary(args, cfg, predictor.embed_dim, device)
        predictor.set_vocabulary(vocabulary)
    except (ConfigError, VocabularyError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2
    try:
        run(predictor, vocabulary, paths, args.output, args.confidence_threshold)
    except DiskFullError as e:  # the folder was written aside: nothing is left behind
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 1
    return 0


def run(predictor, vocabulary, paths, output: str, threshold: float) -> None:
    """
    Detect in each image and write its picture and ``results.json`` into ``output``, which
    appears whole or not at all (written aside, then renamed; an existing folder is
    replaced as a whole).
    """
    results = []

    def fill(folder: str) -> None:
        mark_output_folder(folder, TOOL)
        results.extend(_detect(predictor, vocabulary, paths, folder, threshold))

    atomic_folder(output, fill)
    print(
        f"{len(paths)} images, {len(results)} detections with score >= {threshold} over"
        f" {len(vocabulary.names)} classes ({vocabulary.source}); pictures and {RESULTS_FILE} in"
        f" {output}"
    )


def _detect(predictor, vocabulary, paths, folder: str, threshold: float) -> list:
    """Pictures and COCO results of every image, written into ``folder``; returns the results."""
    results = []
    for image_id, (path, picture) in enumerate(
        tqdm(list(zip(paths, picture_names(paths))), desc="images", unit="image", disable=None),
        start=1,
    ):
        image = read_image(path, format=predictor.input_format)
        # thresholded in the model: masks are pasted at full size only for what is kept
        in_model = max(threshold, predictor.default_score_threshold)
        inst = predictor(image, score_threshold=in_model).to("cpu")
        inst = inst[inst.scores >= threshold]
        drawn = draw_detections(read_image(path, format="RGB"), inst, vocabulary.names)
        Image.fromarray(drawn).save(os.path.join(folder, picture), format="PNG")
        results += _coco_results(inst, image_id, path, vocabulary.names)
    with open(os.path.join(folder, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return results


def _coco_results(inst, image_id: int, path: str, names) -> list:
    """COCO results (XYWH boxes, RLE masks) of one image's detections, with class names."""
    masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
    out = []
    for k, (box, score, cls) in enumerate(
        zip(inst.pred_boxes.tensor.tolist(), inst.scores.tolist(), inst.pred_classes.tolist())
    ):
        det = {
            "image_id": image_id,
            "file_name": path,
            "category_id": cls + 1,
            "category_name": names[cls],
            "score": round(score, 5),
            "bbox": [
                round(box[0], 2),
                round(box[1], 2),
                round(box[2] - box[0], 2),
                round(box[3] - box[1], 2),
            ],
        }
        if masks is not None:
            rle = mask_util.encode(np.asfortranarray(masks[k].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            det["segmentation"] = rle
        out.append(det)
    return out


if __name__ == "__main__":
    sys.exit(main())
