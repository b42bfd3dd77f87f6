"""
LVIS v1 open-vocabulary protocol (ViLD): train on the common + frequent (base)
categories, test on all 1203 with the 337 rare categories as novel.

Metadata is static (from detectron2's LVIS v1 category list), so a config can be checked
without the 1 GB json: ``thing_classes`` (detectron2's names), ``class_frequency``,
``novel_class_ids`` (contiguous ids of the rare categories).
"""

from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import get_lvis_instances_meta
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

from .lvis_format import load_lvis_format_json, novel_ids_by_frequency, remove_annotations_of

__all__ = ["lvis_v1_ov_metadata", "load_lvis_v1_train_ov", "register_lvis_v1_ov"]


def lvis_v1_ov_metadata() -> Dict[str, object]:
    cats = sorted(LVIS_CATEGORIES, key=lambda c: c["id"])
    frequency = [c["frequency"] for c in cats]
    return {
        "thing_classes": get_lvis_instances_meta("lvis_v1")["thing_classes"],
        "class_frequency": frequency,
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
        "novel_class_ids": novel_ids_by_frequency(frequency, ("r",)),
    }


def load_lvis_v1_train_ov(json_file: str, image_root: str) -> List[dict]:
    """LVIS v1 train with the rare categories' annotations removed; every image kept."""
    dicts = load_lvis_format_json(json_file, image_root)
    return remove_annotations_of(dicts, lvis_v1_ov_metadata()["novel_class_ids"])


def register_lvis_v1_ov(
    train_name: str, val_name: str, json_files: Dict[str, str], image_root: str
) -> None:
    """
    Register ``train_name`` (rare annotations removed) and give ``val_name`` (all
    categories) the open-vocabulary metadata; ``val_name`` is registered with vild_d2's
    LVIS-format loader unless it exists already (detectron2 registers ``lvis_v1_val``).
    """
    meta = lvis_v1_ov_metadata()
    DatasetCatalog.register(
        train_name, lambda: load_lvis_v1_train_ov(json_files["train"], image_root)
    )
    MetadataCatalog.get(train_name).set(
        json_file=json_files["train"], image_root=image_root, evaluator_type="lvis", **meta
    )
    if val_name not in DatasetCatalog.list():
        DatasetCatalog.register(
            val_name, lambda: load_lvis_format_json(json_files["val"], image_root)
        )
        MetadataCatalog.get(val_name).set(
            json_file=json_files["val"], image_root=image_root, evaluator_type="lvis"
        )
    val_meta = MetadataCatalog.get(val_name)
    for key, value in meta.items():
        if not hasattr(val_meta, key):
            val_meta.set(**{key: value})
