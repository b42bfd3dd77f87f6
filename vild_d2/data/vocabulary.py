"""
The vocabulary of a registered dataset: its categories and which are novel.

Metadata contract (set by dataset registration): ``thing_classes`` (names in contiguous
order) and, for open-vocabulary splits, ``novel_class_ids`` (contiguous ids of the
categories held out of training; absent means none).
"""

import os
from typing import Optional

import torch
from detectron2.data import MetadataCatalog

from .datasets.lvis_format import ensure_lvis_metadata

__all__ = ["dataset_vocabulary"]


def dataset_vocabulary(dataset_name: str) -> Optional[dict]:
    """
    Returns:
        None if the dataset's categories are not known yet (e.g. its json is absent);
        else a dict with ``dataset``, ``num_classes``, ``class_names`` and ``base_mask``
        ([C] bool tensor, False for novel categories).
    """
    meta = MetadataCatalog.get(dataset_name)
    if getattr(meta, "evaluator_type", None) == "lvis" and os.path.isfile(
        getattr(meta, "json_file", "")
    ):
        ensure_lvis_metadata(dataset_name)
    if not hasattr(meta, "thing_classes"):
        return None
    names = list(meta.thing_classes)
    base_mask = torch.ones(len(names), dtype=torch.bool)
    novel = list(getattr(meta, "novel_class_ids", []))
    if novel:
        if min(novel) < 0 or max(novel) >= len(names):
            raise ValueError(
                f"dataset '{dataset_name}': novel_class_ids {novel[:10]} outside [0, {len(names)})"
            )
        base_mask[torch.tensor(novel)] = False
    return {
        "dataset": dataset_name,
        "num_classes": len(names),
        "class_names": names,
        "base_mask": base_mask,
    }
