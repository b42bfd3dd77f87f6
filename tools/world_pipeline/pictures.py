"""
Pictures of models' detections: one row of images per model, novel categories highlighted;
the pipeline's two pictures of val (the four detectors; ViLD-text and ViLD with the 48
names and with shapes x colours).
"""

import os
from typing import List, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import GenericMask, Visualizer
from PIL import Image, ImageDraw

from vild_d2.data.images import read_image
from vild_d2.inference import OpenVocabularyPredictor
from vild_d2.vocabulary.core import dataset_vocabulary
from vild_d2.world.spec import spec_from_json

from .analysis import expansion_vocabulary
from .context import ROOT, PipelineRun
from .sizes import VAL_DATASET

__all__ = ["draw_detections", "pick_images", "draw_pipeline_pictures"]

NOVEL_COLOUR = (1.0, 0.1, 0.9)  # magenta: a novel category's box, mask and name
BASE_COLOUR = (0.3, 0.8, 1.0)  # light blue: base categories
TITLE_HEIGHT = 18  # pixels of the strip naming each row's model


def _novel_ids(vocab) -> set:
    """Contiguous ids of the novel categories of a :func:`dataset_vocabulary` (None: none)."""
    return set(torch.nonzero(~vocab.base_mask).flatten().tolist()) if vocab else set()


def pick_images(dataset_name: str, num_images: int) -> List[dict]:
    """
    ``num_images`` dataset dicts of ``dataset_name``: those with the most novel
    ground-truth objects first (metadata ``novel_class_ids``), then dataset order.
    """
    dicts = DatasetCatalog.get(dataset_name)
    novel = _novel_ids(dataset_vocabulary(dataset_name))

    def num_novel(d):
        return sum(a["category_id"] in novel for a in d.get("annotations", []))

    order = sorted(range(len(dicts)), key=lambda i: (-num_novel(dicts[i]), i))
    return [dicts[i] for i in order[:num_images]]


def _draw(
    bgr: np.ndarray,
    boxes,
    masks,
    classes: List[int],
    scores,
    class_names: Sequence[str],
    novel: set,
    scale: float,
) -> np.ndarray:
    """
    One image (RGB array) with boxes [n, 4] XYXY, masks (bitmaps or polygons) and names.
    Masks are drawn as outlines, not filled, so that each object's own colour (in the
    shapes world, half of its class) stays visible.
    """
    labels = [
        f"{class_names[c]}{' (novel)' if c in novel else ''}"
        + (f" {s:.0%}" if s is not None else "")
        for c, s in zip(classes, scores)
    ]
    colours = [NOVEL_COLOUR if c in novel else BASE_COLOUR for c in classes]
    vis = Visualizer(bgr[:, :, ::-1], scale=scale)
    vis.overlay_instances(
        boxes=boxes if len(classes) else None,
        labels=labels or None,
        assigned_colors=colours or None,
    )
    for mask, colour in zip(masks if masks is not None else [], colours):
        polygons = mask if isinstance(mask, list) else GenericMask(mask, *bgr.shape[:2]).polygons
        for poly in polygons:
            vis.draw_polygon(np.asarray(poly).reshape(-1, 2), colour, edge_color=colour, alpha=0.0)
    return vis.output.get_image()


def _truth_tiles(dicts: Sequence[dict], images, class_names, novel, scale) -> List[np.ndarray]:
    """The ground truth of each image, drawn like detections."""
    tiles = []
    for d, bgr in zip(dicts, images):
        anns = d.get("annotations", [])
        boxes = np.array(
            [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        )
        masks = (
            [a["segmentation"] for a in anns] if all("segmentation" in a for a in anns) else None
        )
        classes = [a["category_id"] for a in anns]
        tiles.append(
            _draw(bgr, boxes, masks, classes, [None] * len(anns), class_names, novel, scale)
        )
    return tiles


def _detection_tiles(
    cfg, images, class_names, novel, score_threshold, scale, vocabulary=None
) -> List[np.ndarray]:
    """
    The detections of the model of ``cfg`` drawn on each BGR image, as RGB arrays;
    ``vocabulary`` (a :class:`vild_d2.inference.Vocabulary` of the dataset's classes, in
    its order) replaces the model's test vocabulary.
    """
    predictor = OpenVocabularyPredictor(cfg, device=cfg.MODEL.DEVICE)  # cfg.MODEL.WEIGHTS
    if vocabulary is not None:
        predictor.set_vocabulary(vocabulary)
    tiles = []
    for bgr in images:
        image = bgr if predictor.input_format == "BGR" else bgr[:, :, ::-1]
        inst = predictor(np.ascontiguousarray(image)).to("cpu")
        inst = inst[inst.scores >= score_threshold]
        masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
        tiles.append(
            _draw(
                bgr,
                inst.pred_boxes.tensor.numpy(),
                masks,
                inst.pred_classes.tolist(),
                inst.scores.tolist(),
                class_names,
                novel,
                scale,
            )
        )
    return tiles


def draw_detections(
    models: Sequence[Tuple[str, object]],
    dataset_name: str,
    out_path: str,
    num_images: int = 4,
    score_threshold: float = 0.3,
    scale: float = 2.0,
) -> str:
    """
    Run each model on the same ``num_images`` images of ``dataset_name`` (those with the
    most novel objects, :func:`pick_images`) and write one PNG: the ground truth, then a
    row per model, titled, with boxes, masks and class names of detections scoring at least
    ``score_threshold``;
    novel categories are drawn in magenta and named "(novel)".

    Args:
        models: (title, cfg) pairs, or (title, cfg, vocabulary) to detect the dataset's
            classes with another vocabulary (e.g. nouns x attributes); each cfg's
            MODEL.WEIGHTS are loaded.
    Returns:
        ``out_path``.
    """
    vocab = dataset_vocabulary(dataset_name)
    if vocab is None:
        raise ValueError(f"dataset '{dataset_name}' has no categories (is its json present?)")
    names, novel = vocab.names, _novel_ids(vocab)
    dicts = pick_images(dataset_name, num_images)
    images = [read_image(d["file_name"], format="BGR") for d in dicts]
    rows = []
    titled = [("ground truth", _truth_tiles(dicts, images, names, novel, scale))]
    for title, cfg, *vocabulary in models:
        titled.append(
            (
                title,
                _detection_tiles(cfg, images, names, novel, score_threshold, scale, *vocabulary),
            )
        )
    for title, tiles in titled:
        height = max(t.shape[0] for t in tiles)
        tiles = [
            np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0)), constant_values=255)
            for t in tiles
        ]
        row = np.concatenate(tiles, axis=1)
        strip = Image.new("RGB", (row.shape[1], TITLE_HEIGHT), "white")
        ImageDraw.Draw(strip).text((4, 3), title, fill="black")
        rows.append(np.concatenate([np.asarray(strip), row], axis=0))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out_path)
    return out_path


def draw_pipeline_pictures(run: PipelineRun, model_cfgs: list) -> List[str]:
    """
    OUTPUT/detections_val.png: the detectors on the same val images; OUTPUT/expansion_val.png:
    ViLD-text and ViLD with the 48 names vs 8 shapes x 6 colours. Returns both paths.
    """
    print("\n== pictures", flush=True)
    detections = draw_detections(
        [(title, cfg) for _, title, cfg in model_cfgs],
        VAL_DATASET,
        run.path("detections_val.png"),
    )
    spec = spec_from_json(os.path.join(run.data_root, "annotations", "train.json"))
    expansion = expansion_vocabulary(spec, run.teacher)
    rows = []
    for key, title, cfg in model_cfgs:
        if key in ("vild_text", "vild"):
            rows += [
                (f"{title}, 48 names", cfg),
                (f"{title}, 8 shapes x 6 colours: p(shape) p(colour)", cfg, expansion),
            ]
    expanded = draw_detections(rows, VAL_DATASET, run.path("expansion_val.png"))
    for picture in (detections, expanded):
        print(f"   {os.path.relpath(picture, ROOT)}")
    return [detections, expanded]
