"""The CLIP teacher: loading, prompt-ensembled text embeddings, batched region embeddings."""

from .clip_checkpoint import CLIP_VIT_B_32, build_clip, load_clip, save_clip_checkpoint
from ..vocabulary.prompts import SINGLE_TEMPLATE, VILD_TEMPLATES, encode_vocabulary
from .region_encoder import crop_regions, encode_regions, reference_region_embeddings, scale_boxes

__all__ = [
    "CLIP_VIT_B_32",
    "build_clip",
    "load_clip",
    "save_clip_checkpoint",
    "SINGLE_TEMPLATE",
    "VILD_TEMPLATES",
    "encode_vocabulary",
    "crop_regions",
    "encode_regions",
    "reference_region_embeddings",
    "scale_boxes",
]
