#!/usr/bin/env python
"""
The try-it page: a Gradio page on 127.0.0.1 to upload an image, type words and see ViLD
detect them (masks, boxes, names, scores, and a table).

    python demo/app.py                                  # the models `make demo` trained
    python demo/app.py --model converted/vild_ensemble_R_50 --model output/world/vild
    python demo/app.py --port 7861 --examples photos/

Models: every open-vocabulary model folder under --models-root (default output/, two
levels down: output/world/vild, ...) and each --model FOLDER (a converted checkpoint's
folder or a trained model's output folder). Needs the optional extra:
``python3 tools/install.py --extra app``. Analytics are off, nothing is fetched from
outside, and Gradio's temporary files go to --output (default output/app).
"""

import argparse
import glob
import os
import sys

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split

from vild_d2.config import ConfigError
from vild_d2.inference.model_folder import ModelFolder, ModelFolderError, find_model_folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
EXAMPLES_PER_FOLDER = 4  # example images taken from each --examples folder or test dataset
EXAMPLES_JSON_BYTES = 20 * 2**20  # a test dataset's json is read for examples up to this size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", action="append", default=[], help="a model folder (repeatable)")
    p.add_argument(
        "--teacher",
        help="a local CLIP checkpoint file to embed words for the --model folders (instead of"
        " the CLIP they name, e.g. ViT-B/32 on a machine without internet)",
    )
    p.add_argument(
        "--models-root", default="output", help="where to look for model folders (default output)"
    )
    p.add_argument(
        "--examples", nargs="*", default=None, help="example images or folders (default: the"
        " models' test images)",
    )  # fmt: skip
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument("--output", default="output/app", help="Gradio's temporary files")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return p


def collect_models(args) -> list:
    """The --model folders (each must open) then those found under --models-root."""
    models = [ModelFolder.open(path) for path in args.model]
    if args.teacher:
        if not os.path.isfile(args.teacher):
            raise FileNotFoundError(f"--teacher {args.teacher}: no such CLIP checkpoint file")
        for model in models:
            model.teacher = args.teacher
    given = {os.path.abspath(m.path) for m in models}
    for found in find_model_folders(args.models_root):
        if os.path.abspath(found.path) not in given:
            models.append(found)
    return models


def collect_examples(args, models) -> list:
    """Example images: --examples, else the first images of each model's test dataset."""
    if args.examples is None:
        found = [p for m in models for p in _test_images(m)]
        return list(dict.fromkeys(found))  # each once, in order
    paths = []
    for source in args.examples:
        if os.path.isdir(source):
            found = sorted(
                f
                for f in glob.glob(os.path.join(source, "*"))
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            paths += found[:EXAMPLES_PER_FOLDER]
        elif os.path.isfile(source):
            paths.append(source)
        else:
            raise FileNotFoundError(f"--examples {source}: no such image or folder")
    return paths


def _test_images(model: ModelFolder) -> list:
    """The first images of the model's test dataset, if its annotation file is small."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = model.test_dataset
    if name is None:
        return []
    json_file = getattr(MetadataCatalog.get(name), "json_file", "")
    if not os.path.isfile(json_file) or os.path.getsize(json_file) > EXAMPLES_JSON_BYTES:
        return []  # absent, or large as LVIS val's: not read just for examples
    images = [d["file_name"] for d in DatasetCatalog.get(name)]
    return [p for p in images if os.path.isfile(p)][:EXAMPLES_PER_FOLDER]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 0 < args.port < 65536:
            raise ValueError(f"--port {args.port} is not in 1 ... 65535")
        models = collect_models(args)
        examples = collect_examples(args, models)
    except (ModelFolderError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    # before gradio is imported: no telemetry, no version check, temp files in --output
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = os.path.abspath(os.path.join(args.output, "tmp"))
    from vild_d2.app.page import ModelShelf, build_page

    page = build_page(ModelShelf(models, args.device), examples)
    print(f"{len(models)} models: {', '.join(m.path for m in models) or 'none'}", flush=True)
    page.launch(
        server_name="127.0.0.1", server_port=args.port, share=False, quiet=True,
        allowed_paths=[os.path.abspath(p) for p in examples],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
