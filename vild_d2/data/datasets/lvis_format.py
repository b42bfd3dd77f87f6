"""
Load and register datasets in LVIS v1 json format.

detectron2's own ``load_lvis_json`` only knows the builtin LVIS names and derives image
paths from ``coco_url``. This loader also accepts a ``file_name`` per image (relative to
the image root; generated and custom LVIS-format datasets use it), keeps any category-id
set through ``thing_dataset_id_to_contiguous_id``, and names the file and id at fault
when the json is malformed.
"""

import json
import logging
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ...errors import VildD2Error

logger = logging.getLogger(__name__)

__all__ = [
    "load_image_list",
    "load_lvis_format_json",
    "register_lvis_format",
    "lvis_format_metadata",
    "remove_annotations_of",
    "check_box",
    "DatasetFormatError",
]

REQUIRED_KEYS = {
    "images": ("id", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name", "frequency"),
}
SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}


class DatasetFormatError(VildD2Error, ValueError):
    """An LVIS-format json that cannot be loaded; the message names the file and id."""


def _read_json(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"LVIS-format annotation file not found: {json_file} (see datasets/README.md "
            "for how to prepare it)"
        )
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(
            f"{json_file}: not valid JSON (truncated or garbage?): {e}"
        ) from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{json_file}: holds a JSON {type(data).__name__}, not an object")
    for section, keys in REQUIRED_KEYS.items():
        if section not in data:
            raise DatasetFormatError(f"{json_file}: no '{section}' list")
        for item in data[section]:
            missing = [k for k in keys if k not in item]
            if missing:
                raise DatasetFormatError(
                    f"{json_file}: {SINGULAR[section]} id={item.get('id')} lacks {missing}"
                )
    for section in ("images", "categories"):
        _check_unique_ids(json_file, section, data[section])
    return data


def _check_unique_ids(json_file: str, section: str, items: List[dict]) -> None:
    """Two images (or categories) with one id: the second would take the first one's place."""
    seen, repeated = set(), []
    for item in items:
        if item["id"] in seen and item["id"] not in repeated:
            repeated.append(item["id"])
        seen.add(item["id"])
    if repeated:
        shown = ", ".join(str(i) for i in repeated[:10])
        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        raise DatasetFormatError(
            f"{json_file}: {len(repeated)} {SINGULAR[section]} ids appear more than once in"
            f" '{section}' ({shown}{more}): their annotations could not be told apart"
        )


def lvis_format_metadata(categories: List[dict]) -> Dict[str, object]:
    """
    Metadata for a list of LVIS categories, sorted by id.

    Returns:
        dict with ``thing_classes`` (names in contiguous order), ``class_frequency``
        ("r"/"c"/"f" per class) and ``thing_dataset_id_to_contiguous_id``; and
        ``class_novel_kind`` (per class, e.g. "compositional" / "concept", "" for base) if
        the categories carry an optional ``novel_kind`` field (the shapes world's do).
    """
    cats = sorted(categories, key=lambda c: c["id"])
    meta = {
        "thing_classes": [c["name"] for c in cats],
        "class_frequency": [c["frequency"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }
    if any(c.get("novel_kind") for c in cats):
        meta["class_novel_kind"] = [c.get("novel_kind") or "" for c in cats]
    return meta


def _image_path(image_root: str, img: dict) -> str:
    if "file_name" in img:
        return os.path.join(image_root, img["file_name"])
    if "coco_url" in img:  # LVIS v1: '.../train2017/000000155379.jpg'
        split_folder, file_name = img["coco_url"].split("/")[-2:]
        return os.path.join(image_root, split_folder, file_name)
    raise DatasetFormatError(f"image id={img['id']} has neither 'file_name' nor 'coco_url'")


def load_image_list(json_file: str, image_root: str) -> List[dict]:
    """
    Only the images of a COCO- or LVIS-format json: dicts with ``file_name``, ``image_id``,
    ``height`` and ``width`` (what the region precompute needs), in the json's order.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"annotation file not found: {json_file}")
    with open(json_file, encoding="utf-8") as f:
        images = json.load(f).get("images")
    if not isinstance(images, list):
        raise DatasetFormatError(f"{json_file}: no 'images' list")
    out = []
    for img in images:
        missing = [k for k in REQUIRED_KEYS["images"] if k not in img]
        if missing:
            raise DatasetFormatError(f"{json_file}: image id={img.get('id')} lacks {missing}")
        out.append(
            {
                "file_name": _image_path(image_root, img),
                "image_id": img["id"],
                "height": img["height"],
                "width": img["width"],
            }
        )
    return out


def check_box(json_file: str, ann: dict) -> None:
    """Refuse a bbox that is not 4 finite numbers with positive width and height (XYWH)."""
    box = ann["bbox"]
    ok = isinstance(box, (list, tuple)) and len(box) == 4
    ok = (
        ok
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
        and box[2] > 0
        and box[3] > 0
    )
    if not ok:
        raise DatasetFormatError(
            f"{json_file}: annotation id={ann['id']} has bbox {box!r}; expected [x, y, width,"
            " height] with width and height > 0"
        )


def load_lvis_format_json(json_file: str, image_root: str) -> List[dict]:
    """
    Read an LVIS-format json into detectron2's dataset-dict format.

    Args:
        json_file: path to the LVIS-format json.
        image_root: folder the images' ``file_name`` (or ``coco_url`` split/name) is
            relative to.

    Returns:
        list[dict], one per image: ``file_name``, ``height``, ``width``, ``image_id``,
        ``not_exhaustive_category_ids`` and ``neg_category_ids`` (contiguous ids) and
        ``annotations`` with ``bbox`` (XYWH_ABS, pixels), ``category_id`` (contiguous,
        0-based), ``segmentation`` (polygons) and ``iscrowd`` 0.
    """
    data = _read_json(json_file)
    id_map = lvis_format_metadata(data["categories"])["thing_dataset_id_to_contiguous_id"]
    anns_per_image = _annotations_per_image(json_file, data, id_map)
    dataset_dicts = []
    for img in data["images"]:
        record = {
            "file_name": _image_path(image_root, img),
            "height": img["height"],
            "width": img["width"],
            "image_id": img["id"],
            "not_exhaustive_category_ids": [
                id_map[c] for c in img.get("not_exhaustive_category_ids", [])
            ],
            "neg_category_ids": [id_map[c] for c in img.get("neg_category_ids", [])],
            "annotations": [_instance(json_file, ann, id_map) for ann in anns_per_image[img["id"]]],
        }
        dataset_dicts.append(record)
    logger.info(f"Loaded {len(dataset_dicts)} images from {json_file}")
    return dataset_dicts


def _annotations_per_image(json_file: str, data: dict, id_map: dict) -> Dict[int, List[dict]]:
    """image id -> its annotations; DatasetFormatError on a repeated id or a dangling reference."""
    anns_per_image: Dict[int, List[dict]] = {img["id"]: [] for img in data["images"]}
    seen_ann_ids = set()
    for ann in data["annotations"]:
        if ann["id"] in seen_ann_ids:
            raise DatasetFormatError(f"{json_file}: annotation id={ann['id']} appears twice")
        seen_ann_ids.add(ann["id"])
        if ann["image_id"] not in anns_per_image:
            raise DatasetFormatError(
                f"{json_file}: annotation id={ann['id']} refers to image_id={ann['image_id']}"
                " which is not in 'images'"
            )
        if ann["category_id"] not in id_map:
            raise DatasetFormatError(
                f"{json_file}: annotation id={ann['id']} has category_id={ann['category_id']}"
                " which is not in 'categories'"
            )
        check_box(json_file, ann)
        anns_per_image[ann["image_id"]].append(ann)
    return anns_per_image


def _instance(json_file: str, ann: dict, id_map: dict) -> dict:
    """One annotation as a detectron2 instance dict (polygons only)."""
    obj = {
        "bbox": ann["bbox"],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": id_map[ann["category_id"]],
        "iscrowd": 0,
    }
    if "segmentation" in ann:
        if isinstance(ann["segmentation"], dict):  # RLE (e.g. a crowd region from COCO)
            raise DatasetFormatError(
                f"{json_file}: annotation id={ann['id']} has an RLE segmentation;"
                " LVIS-format files here hold polygons (convert it, or drop the"
                " annotation)"
            )
        polygons = [p for p in ann["segmentation"] if len(p) % 2 == 0 and len(p) >= 6]
        if not polygons:
            raise DatasetFormatError(f"{json_file}: annotation id={ann['id']} has no valid polygon")
        obj["segmentation"] = polygons
    return obj


def register_lvis_format(
    name: str,
    json_file: str,
    image_root: str,
    metadata: Optional[dict] = None,
    *,
    novel_frequencies: Sequence[str] = (),
    remove_novel_annotations: bool = False,
) -> None:
    """
    Register an LVIS-format dataset under ``name`` (lazily: nothing is read until
    ``DatasetCatalog.get(name)``). Its metadata gets ``evaluator_type="lvis"``, so
    ``vild_d2.evaluation.build_evaluator`` evaluates it with LVISEvaluator (AP, APr,
    APc, APf); the class names and frequencies are read from the json on first use.

    Args:
        novel_frequencies: open-vocabulary split: categories of these LVIS frequencies
            (e.g. ``("r",)``: rare = novel) are the novel ones; their contiguous ids go
            to the metadata's ``novel_class_ids``.
        remove_novel_annotations: drop the novel categories' annotations (a training
            split). Images are kept, also those left without annotations.
    """
    DatasetCatalog.register(
        name, lambda: _load_and_set_metadata(name, json_file, image_root, remove_novel_annotations)
    )
    extra = {"novel_frequencies": list(novel_frequencies)} if novel_frequencies else {}
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="lvis",
        **extra,
        **(metadata or {}),
    )


def remove_annotations_of(dataset_dicts: List[dict], class_ids: Iterable[int]) -> List[dict]:
    """The dicts with annotations of contiguous ``class_ids`` removed (images kept)."""
    drop = set(class_ids)
    for d in dataset_dicts:
        d["annotations"] = [a for a in d["annotations"] if a["category_id"] not in drop]
    return dataset_dicts


def _load_and_set_metadata(
    name: str, json_file: str, image_root: str, remove_novel_annotations: bool
) -> List[dict]:
    dicts = load_lvis_format_json(json_file, image_root)
    ensure_lvis_metadata(name)
    if remove_novel_annotations:
        remove_annotations_of(dicts, MetadataCatalog.get(name).novel_class_ids)
    return dicts


def novel_ids_by_frequency(
    class_frequency: Sequence[str], novel_frequencies: Sequence[str]
) -> List[int]:
    """Contiguous ids of the classes whose LVIS frequency is one of ``novel_frequencies``."""
    return [i for i, f in enumerate(class_frequency) if f in novel_frequencies]


def ensure_lvis_metadata(name: str) -> None:
    """
    Fill ``thing_classes`` & co. of dataset ``name`` from its json if not set yet, and
    ``novel_class_ids`` from ``novel_frequencies`` if the dataset has them.
    """
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_classes"):
        meta.set(**lvis_format_metadata(_read_json(meta.json_file)["categories"]))
    if hasattr(meta, "novel_frequencies") and not hasattr(meta, "novel_class_ids"):
        meta.set(
            novel_class_ids=novel_ids_by_frequency(meta.class_frequency, meta.novel_frequencies)
        )
