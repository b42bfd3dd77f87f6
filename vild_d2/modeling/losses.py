"""
ViLD's scoring and losses as plain tensor functions (scriptable; shapes in docstrings).
Notation of the ViLD paper (docs/model.md): region embedding e_r, text embeddings t_c,
background embedding e_bg, temperature tau.
"""

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["text_logits", "image_logits", "distillation_l1_loss", "ensemble_scores"]


def text_logits(
    region_embeddings: torch.Tensor,
    class_embeddings: torch.Tensor,
    bg_embedding: torch.Tensor,
    temperature: float,
    base_mask: Optional[torch.Tensor] = None,
    novel_logit: float = float("-inf"),
) -> torch.Tensor:
    """
    z(r)/tau = [cos(e_r, t_1), ..., cos(e_r, t_C), cos(e_r, e_bg)] / tau.

    Args:
        region_embeddings: [R, D], unit-norm rows.
        class_embeddings: [C, D], unit-norm rows.
        bg_embedding: [D], any norm (normalised here).
        temperature: tau (0.01 in ViLD).
        base_mask: optional [C] bool; classes where it is False get ``novel_logit``
            (ViLD training excludes novel categories).
        novel_logit: -inf removes them from the softmax (vild_d2's default); 0 is what the
            official code does (it multiplies the logits by a 0/1 mask, so each novel class
            still adds exp(0) to the softmax's denominator).

    Returns:
        [R, C + 1] logits; the background is the last column (detectron2's convention).
    """
    weights = torch.cat([class_embeddings, F.normalize(bg_embedding, dim=0)[None]], dim=0)
    logits = region_embeddings @ weights.t() / temperature
    if base_mask is not None:
        keep = torch.cat([base_mask, base_mask.new_ones(1)])
        logits = logits.masked_fill(~keep[None], novel_logit)
    return logits


def image_logits(
    region_embeddings: torch.Tensor, class_embeddings: torch.Tensor, temperature: float
) -> torch.Tensor:
    """cos(e_r, t_c) / tau: [R, D] x [C, D] -> [R, C] (the image head has no background)."""
    return region_embeddings @ class_embeddings.t() / temperature


def distillation_l1_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """
    L_image = mean over valid regions of ||e_r - v_r||_1 (summed over D).

    Args:
        student: [M, D] region embeddings of the detector (unit norm).
        teacher: [M, D] CLIP image embeddings of the same regions (unit norm).
        valid: optional [M] bool; invalid regions contribute nothing.

    Returns:
        scalar; 0 (still connected to ``student``) when no region is valid.
    """
    per_region = (student - teacher.to(student.dtype)).abs().sum(dim=1)
    if valid is not None:
        per_region = per_region[valid]
    if per_region.numel() == 0:
        return student.sum() * 0.0
    return per_region.mean()


def ensemble_scores(
    p_text: torch.Tensor, p_img: torch.Tensor, base_mask: torch.Tensor, lam: float
) -> torch.Tensor:
    """
    ViLD-ensemble: p_text^lam * p_img^(1-lam) for base classes and
    p_text^(1-lam) * p_img^lam for novel classes.

    Args:
        p_text: [R, C] class probabilities of the text head (background column removed).
        p_img: [R, C] class probabilities of the image head.
        base_mask: [C] bool, True for base classes.
        lam: lambda (2/3 in ViLD).

    Returns:
        [R, C] scores.
    """
    w_text = torch.where(
        base_mask, torch.full_like(p_text[0], lam), torch.full_like(p_text[0], 1 - lam)
    )
    return p_text.pow(w_text[None]) * p_img.pow(1 - w_text[None])
