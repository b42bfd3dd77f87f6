"""
The vocabulary of a registered dataset: its categories and which are novel.

Metadata contract (set by dataset registration): ``thing_classes`` (names in contiguous
order) and, for open-vocabulary splits, ``novel_class_ids`` (contiguous ids of the
categories held out of training; absent means none).
"""

import json
import os
from dataclasses import dataclass
from typing import List, Optional

import torch
from detectron2.data import MetadataCatalog

from ..data.datasets.lvis_format import ensure_lvis_metadata
from ..errors import VildD2Error

__all__ = ["Vocabulary", "VocabularyError", "dataset_vocabulary", "embeddings_provenance"]


class VocabularyError(VildD2Error, ValueError):
    """A vocabulary that cannot be used (names, embeddings or their shapes); names the culprit."""


@dataclass
class Vocabulary:
    """What a detector looks for: class names and, once embedded, their text embeddings."""

    names: List[str]  # C class names (with attributes: the C = N * A pairs, "attribute noun")
    embeddings: Optional[torch.Tensor] = None  # [N, D] unit-norm (the nouns, with attributes)
    source: str = ""  # where it came from, for messages and results files
    attribute_embeddings: Optional[torch.Tensor] = None  # [A, D]: score noun x attribute pairs
    base_mask: Optional[torch.Tensor] = None  # [C] bool: classes that were base in training

    @property
    def num_classes(self) -> int:
        return len(self.names)


def dataset_vocabulary(dataset_name: str) -> Optional[Vocabulary]:
    """
    Returns:
        None if the dataset's categories are not known yet (e.g. its json is absent); else
        its class names and ``base_mask`` ([C] bool, False for novel categories), without
        embeddings; ``source`` is "dataset '<name>'".
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
    return Vocabulary(names=names, base_mask=base_mask, source=f"dataset '{dataset_name}'")


def embeddings_provenance(embeddings_file: str) -> dict:
    """
    What ``tools/precompute_text_embeddings.py`` recorded beside a text-embedding file (the
    ``.json`` of the same stem: class_names, teacher, teacher_sha256, ...); {} if none.
    """
    sidecar = os.path.splitext(embeddings_file)[0] + ".json"
    if not embeddings_file or not os.path.isfile(sidecar):
        return {}
    try:
        with open(sidecar, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise VocabularyError(f"{sidecar}: not a readable json ({e})") from None
    return info if isinstance(info, dict) else {}
