"""
ViLD's claims (Gu et al., ICLR 2022, LVIS mask AP), checked on measured numbers.

The paper's story, as checkable statements about four detectors trained on the base
categories (ViLD-text, ViLD, ViLD-ensemble) or on all of them (the supervised Mask R-CNN):

(a) distillation teaches what the text classifier cannot: ViLD's APr is above
    ViLD-text's with the bootstrap interval of the difference above 0 (paper: 16.1 vs 10.1);
(a') on novel categories that are new concepts (not new combinations of base attributes)
    ViLD is at least level with ViLD-text (reported with its interval). Not "+10": CLIP on
    cropped regions, the student's teacher applied directly, is itself only a few points
    above ViLD-text there, as on LVIS;
(b) the ensemble keeps that: ViLD-ensemble's APr is at least ViLD's and at least the
    supervised model's (reported with the interval of ensemble - ViLD: the paper's margin
    is +0.5 APr, 16.6 vs 16.1, about what the world's 600 val images resolve; docs/runs.md);
(c) and does not pay for it on base categories: ViLD-ensemble's APc and APf are each
    within ``BASE_TOLERANCE`` points of ViLD-text's, or above;
(d) the student learned its teacher: ViLD's top-1 agreement with the teacher on its own
    training regions is at least ``MIN_FIT_AGREEMENT`` %, and its head names at least
    ``MIN_COMPOSITIONAL_TOP1`` % of the compositional-novel val boxes.
"""

import math
from typing import Dict, List, Optional

__all__ = [
    "CLAIM_COMPARISONS",
    "BASE_TOLERANCE",
    "MIN_FIT_AGREEMENT",
    "MIN_COMPOSITIONAL_TOP1",
    "check_claims",
]

BASE_TOLERANCE = 2.0  # AP points ViLD-ensemble may trail ViLD-text by on APc and APf
MIN_FIT_AGREEMENT = 75.0  # % of its training regions where ViLD's nearest class is the teacher's
MIN_COMPOSITIONAL_TOP1 = 65.0  # % of compositional-novel val boxes ViLD's head names right

# (model a, model b, metric): the paired differences a - b whose bootstrap intervals are reported.
CLAIM_COMPARISONS = [
    ("vild", "vild_text", "APr"),
    ("vild", "vild_text", "APr-concept"),
    ("vild_ensemble", "vild", "APr"),
    ("vild_ensemble", "mask_rcnn_supervised", "APr"),
    ("vild_ensemble", "vild_text", "APc"),
    ("vild_ensemble", "vild_text", "APf"),
]


def check_claims(
    ap: Dict[str, Dict[str, float]], intervals: List[dict], fit: Optional[dict] = None
) -> List[dict]:
    """
    Args:
        ap: model key -> mask AP (%) by metric ("APr", "APc", "APf", "APr-concept", ...).
        intervals: :func:`bootstrap_differences` output for :data:`CLAIM_COMPARISONS`
            (a, b, metric, diff, lo, hi).
        fit: ViLD's distillation numbers: "top1_agreement" (% of its training regions,
            :func:`vild_d2.evaluation.distillation_fit.fit_metrics`) and "compositional_top1"
            (its head's top-1 on compositional-novel val boxes, %); None: (d) is missed.

    Returns:
        per claim: name ("a", "a'", "b", "c", "d"), text, met (bool; False if a number is
        missing) and detail (the numbers it was decided on).
    """
    ci = {(r["a"], r["b"], r["metric"]): r for r in intervals}

    def get(model, metric):
        return ap.get(model, {}).get(metric, float("nan"))

    def interval(metric, a="vild", b="vild_text"):
        r = ci.get((a, b, metric))
        return (r["lo"], r["hi"]) if r else (float("nan"), float("nan"))

    return [
        _claim_a(get, *interval("APr")),
        _claim_a_concept(get, *interval("APr-concept")),
        _claim_b(get, *interval("APr", "vild_ensemble", "vild")),
        _claim_c(get),
        _claim_d(fit or {}),
    ]


def _known(*values) -> bool:
    return all(isinstance(v, (int, float)) and not math.isnan(v) for v in values)


def _claim_a(get, lo: float, hi: float) -> dict:
    vild, text = get("vild", "APr"), get("vild_text", "APr")
    return {
        "name": "a",
        "met": bool(_known(vild, text, lo) and vild > text and lo > 0),
        "text": "ViLD APr > ViLD-text APr, the 90% interval above 0",
        "detail": (
            f"APr {vild:.1f} vs {text:.1f} (diff {vild - text:+.1f}, 90% CI"
            f" [{lo:+.1f}, {hi:+.1f}])"
        ),
    }


def _claim_a_concept(get, lo: float, hi: float) -> dict:
    vild, text = get("vild", "APr-concept"), get("vild_text", "APr-concept")
    return {
        "name": "a'",
        "met": bool(_known(vild, text) and vild >= text),
        "text": "ViLD APr-concept >= ViLD-text APr-concept",
        "detail": (
            f"APr-concept {vild:.1f} vs {text:.1f} (diff {vild - text:+.1f}, 90% CI"
            f" [{lo:+.1f}, {hi:+.1f}])"
        ),
    }


def _claim_d(fit: dict) -> dict:
    agreement = fit.get("top1_agreement", float("nan"))
    compositional = fit.get("compositional_top1", float("nan"))
    met = (
        _known(agreement, compositional)
        and agreement >= MIN_FIT_AGREEMENT
        and compositional >= MIN_COMPOSITIONAL_TOP1
    )
    return {
        "name": "d",
        "met": bool(met),
        "text": (
            f"ViLD's top-1 agreement with its teacher on its training regions >= "
            f"{MIN_FIT_AGREEMENT:g}%, its head's top-1 on compositional val boxes >= "
            f"{MIN_COMPOSITIONAL_TOP1:g}%"
        ),
        "detail": (
            f"agreement {_percent(agreement, MIN_FIT_AGREEMENT)}, compositional top-1"
            f" {_percent(compositional, MIN_COMPOSITIONAL_TOP1)}"
        ),
    }


def _percent(value: float, threshold: float) -> str:
    """``value`` % to 0.1, or to 0.01 where 0.1 would round a miss up to ``threshold``."""
    shown = f"{value:.1f}"
    if value < threshold and float(shown) >= threshold:
        shown = f"{value:.2f}"
    return shown + "%"


def _claim_b(get, lo: float, hi: float) -> dict:
    """Decided on the APr values; the interval of ensemble - ViLD shows how sure that is."""
    vild, ens, sup = (
        get("vild", "APr"),
        get("vild_ensemble", "APr"),
        get("mask_rcnn_supervised", "APr"),
    )
    return {
        "name": "b",
        "met": bool(_known(ens, vild, sup) and ens >= vild and ens >= sup),
        "text": "ViLD-ensemble APr >= ViLD APr and >= supervised APr",
        "detail": (
            f"APr {ens:.1f} vs ViLD {vild:.1f} (diff {ens - vild:+.1f}, 90% CI"
            f" [{lo:+.1f}, {hi:+.1f}]) and supervised {sup:.1f}"
        ),
    }


def _claim_c(get) -> dict:
    ens_c, ens_f = get("vild_ensemble", "APc"), get("vild_ensemble", "APf")
    text_c, text_f = get("vild_text", "APc"), get("vild_text", "APf")
    met = (
        _known(ens_c, ens_f, text_c, text_f)
        and ens_c >= text_c - BASE_TOLERANCE
        and ens_f >= text_f - BASE_TOLERANCE
    )
    return {
        "name": "c",
        "met": bool(met),
        "text": f"ViLD-ensemble APc and APf within {BASE_TOLERANCE:g} points of ViLD-text or above",
        "detail": f"APc {ens_c:.1f} vs {text_c:.1f}, APf {ens_f:.1f} vs {text_f:.1f}",
    }
