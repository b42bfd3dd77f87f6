"""
The shapes world: the generated, offline stand-in for LVIS + CLIP + ImageNet on which the
world pipeline (tools/world_pipeline, a driver of the checkout) runs ViLD end to end.

    spec               its shapes, colours, categories, novel kinds, transfer vocabulary
    render             one scene: objects, occlusion, textures, exact masks
    splits             the train / val / transfer splits in LVIS v1 json format
    objects            rendered and val objects as tensors, for the loops below
    teacher_training   the world's CLIP, trained contrastively on crops (its teacher)
    imagenet           RoI-classification pretraining (its ImageNet)
"""

from .splits import generate_shapes_world, generate_transfer_split
from .spec import (
    ShapesWorldSpec,
    category_names,
    concept_novel_ids,
    designed_novel_ids,
    novel_kinds,
    spec_from_json,
)

__all__ = [
    "ShapesWorldSpec",
    "generate_shapes_world",
    "generate_transfer_split",
    "category_names",
    "concept_novel_ids",
    "designed_novel_ids",
    "novel_kinds",
    "spec_from_json",
]
