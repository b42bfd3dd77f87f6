"""
ViLD's claims (Gu et al., ICLR 2022, LVIS mask AP), checked on measured numbers.

The paper's story, as checkable statements about four detectors trained on the base
categories (ViLD-text, ViLD, ViLD-ensemble) or on all of them (the supervised Mask R-CNN):

(a) distillation teaches what the text classifier cannot: ViLD's APr is above
    ViLD-text's with the bootstrap interval of the difference above 0, and on novel
    categories that are new concepts (not new combinations of base attributes) ViLD
    leads by at least ``CONCEPT_MARGIN`` points;
(b) the ensemble keeps that: ViLD-ensemble's APr is at least ViLD's and at least the
    supervised model's;
(c) and does not pay for it on base categories: ViLD-ensemble's APc and APf are each
    within ``BASE_TOLERANCE`` points of ViLD-text's, or above.
"""

import math
from typing import Dict, List

__all__ = ["CLAIM_COMPARISONS", "CONCEPT_MARGIN", "BASE_TOLERANCE", "check_claims"]

CONCEPT_MARGIN = 10.0  # AP points ViLD must lead ViLD-text by on concept-novel categories
BASE_TOLERANCE = 2.0  # AP points ViLD-ensemble may trail ViLD-text by on APc and APf

# (model a, model b, metric): the paired differences a - b whose bootstrap intervals are reported.
CLAIM_COMPARISONS = [
    ("vild", "vild_text", "APr"),
    ("vild", "vild_text", "APr-concept"),
    ("vild_ensemble", "vild", "APr"),
    ("vild_ensemble", "mask_rcnn_supervised", "APr"),
    ("vild_ensemble", "vild_text", "APc"),
    ("vild_ensemble", "vild_text", "APf"),
]


def check_claims(ap: Dict[str, Dict[str, float]], intervals: List[dict]) -> List[dict]:
    """
    Args:
        ap: model key -> mask AP (%) by metric ("APr", "APc", "APf", "APr-concept", ...).
        intervals: :func:`bootstrap_differences` output for :data:`CLAIM_COMPARISONS`
            (a, b, metric, diff, lo, hi).

    Returns:
        per claim: name ("a", "b", "c"), text, met (bool; False if a number is missing)
        and detail (the numbers it was decided on).
    """
    ci = {(r["a"], r["b"], r["metric"]): r for r in intervals}

    def get(model, metric):
        return ap.get(model, {}).get(metric, float("nan"))

    r = ci.get(("vild", "vild_text", "APr"))
    lo, hi = (r["lo"], r["hi"]) if r else (float("nan"), float("nan"))
    return [_claim_a(get, lo, hi), _claim_b(get), _claim_c(get)]


def _known(*values) -> bool:
    return all(isinstance(v, (int, float)) and not math.isnan(v) for v in values)


def _claim_a(get, lo: float, hi: float) -> dict:
    vild, text = get("vild", "APr"), get("vild_text", "APr")
    vild_c, text_c = get("vild", "APr-concept"), get("vild_text", "APr-concept")
    met = _known(vild, text, vild_c, text_c, lo) and vild > text and lo > 0
    return {
        "name": "a",
        "met": bool(met and vild_c >= text_c + CONCEPT_MARGIN),
        "text": (
            "ViLD APr > ViLD-text APr (90% interval above 0), and on concept-novel categories "
            f">= ViLD-text + {CONCEPT_MARGIN:g}"
        ),
        "detail": (
            f"APr {vild:.1f} vs {text:.1f} (diff {vild - text:+.1f}, 90% CI [{lo:+.1f},"
            f" {hi:+.1f}]); APr-concept {vild_c:.1f} vs {text_c:.1f}"
        ),
    }


def _claim_b(get) -> dict:
    vild, ens, sup = (
        get("vild", "APr"),
        get("vild_ensemble", "APr"),
        get("mask_rcnn_supervised", "APr"),
    )
    return {
        "name": "b",
        "met": bool(_known(ens, vild, sup) and ens >= vild and ens >= sup),
        "text": "ViLD-ensemble APr >= ViLD APr and >= supervised APr",
        "detail": f"APr {ens:.1f} vs ViLD {vild:.1f} and supervised {sup:.1f}",
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
