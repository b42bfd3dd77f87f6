"""The CLIP teacher: loading, and (later) prompt-ensembled text and region encoding."""

from .clip_checkpoint import CLIP_VIT_B_32, build_clip, load_clip, save_clip_checkpoint

__all__ = ["CLIP_VIT_B_32", "build_clip", "load_clip", "save_clip_checkpoint"]
