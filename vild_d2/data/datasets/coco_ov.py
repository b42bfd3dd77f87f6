"""
Open-vocabulary COCO (the OVR-CNN split used by ViLD, Detic, RegionCLIP): 48 base and 17
novel categories; the other 15 COCO categories take no part.

Both splits have the 65 categories (contiguous ids in COCO id order) and
``novel_class_ids`` (the 17): train keeps only base annotations (every image kept),
val keeps base and novel annotations. Evaluation: COCO AP50 on novel, base and all
(``vild_d2.evaluation.OpenVocabCOCOEvaluator``).
"""

from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .lvis_format import check_box

__all__ = [
    "COCO_OV_BASE",
    "COCO_OV_NOVEL",
    "coco_ov_metadata",
    "load_coco_ov_json",
    "register_coco_ov",
]

# Category names as in COCO 2017's json.
COCO_OV_BASE = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "train",
    "truck",
    "boat",
    "bench",
    "bird",
    "horse",
    "sheep",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "handbag",
    "suitcase",
    "frisbee",
    "skis",
    "kite",
    "surfboard",
    "bottle",
    "fork",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "pizza",
    "donut",
    "chair",
    "bed",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "microwave",
    "oven",
    "toaster",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "toothbrush",
]
COCO_OV_NOVEL = [
    "airplane",
    "bus",
    "cat",
    "dog",
    "cow",
    "elephant",
    "umbrella",
    "tie",
    "snowboard",
    "skateboard",
    "cup",
    "knife",
    "cake",
    "couch",
    "keyboard",
    "sink",
    "scissors",
]


def coco_ov_metadata() -> Dict[str, object]:
    """thing_classes (65, COCO id order), thing_dataset_id_to_contiguous_id, novel_class_ids."""
    wanted = set(COCO_OV_BASE) | set(COCO_OV_NOVEL)
    cats = sorted(
        (c for c in COCO_CATEGORIES if c["isthing"] and c["name"] in wanted), key=lambda c: c["id"]
    )
    assert len(cats) == 65, "detectron2's COCO category names changed"
    novel = set(COCO_OV_NOVEL)
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
        "novel_class_ids": [i for i, c in enumerate(cats) if c["name"] in novel],
    }


def load_coco_ov_json(json_file: str, image_root: str, keep_novel: bool) -> List[dict]:
    """
    A COCO-format json (80 categories, COCO ids) as the open-vocabulary split: annotations
    of the 65 categories with contiguous ids, novel ones only if ``keep_novel``. All
    images are kept.
    """
    meta = coco_ov_metadata()
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    novel = set(meta["novel_class_ids"])
    dicts = load_coco_json(
        json_file, image_root, extra_annotation_keys=["id"]
    )  # no name: COCO ids kept
    for d in dicts:
        annos = []
        for a in d.get("annotations", []):
            check_box(json_file, a)  # as every LVIS/COCO-format registration of vild_d2 does
            a.pop("id", None)
            c = id_map.get(a["category_id"])
            if c is not None and (keep_novel or c not in novel):
                annos.append(dict(a, category_id=c))
        d["annotations"] = annos
    return dicts


def register_coco_ov(name: str, json_file: str, image_root: str, train: bool) -> None:
    """
    Register an open-vocabulary COCO split. The metadata names the source json as
    ``source_json_file``, not ``json_file``: evaluation must use the 65-category ground
    truth, which COCOEvaluator derives from the registered dicts.
    """
    DatasetCatalog.register(
        name, lambda: load_coco_ov_json(json_file, image_root, keep_novel=not train)
    )
    MetadataCatalog.get(name).set(
        source_json_file=json_file,
        image_root=image_root,
        evaluator_type="coco_ov",
        **coco_ov_metadata(),
    )
