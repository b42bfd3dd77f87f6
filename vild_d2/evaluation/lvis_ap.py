"""
LVIS AP per category from a results file, fast enough to bootstrap over images.

:class:`LVISAPTable` matches a model's detections to the ground truth once, exactly as
the ``lvis`` API's LVISEval does (per image and category, detections by score, greedy
matching at IoU 0.50:0.05:0.95, only images whose positive or negative category sets
name the category, unmatched detections of a category the image lists as not exhaustive
ignored, at most ``max_dets`` detections per image), and then computes the 101-point
interpolated AP of any category set for any multiset of images: the full val set gives
LVISEval's AP (tested to agree), a resample with replacement gives one bootstrap
replicate. Resamples are shared across models (:func:`bootstrap_differences`), so each
claim's interval is of a paired difference.
"""

import json
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import VildD2Error

__all__ = [
    "LVISAPTable",
    "ResultsError",
    "check_results",
    "bootstrap_differences",
    "resample_image_weights",
]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


class ResultsError(VildD2Error, ValueError):
    """LVIS results that would be scored wrongly without a word; names the file and entries."""


def _same_name(a: str, b: str) -> bool:
    """Category names compared as vocabularies write them ("fire_hydrant" = "Fire hydrant")."""
    return str(a).replace("_", " ").strip().lower() == str(b).replace("_", " ").strip().lower()


def _result_problem(
    r: dict, image_ids: set, category_ids: set, iou_type: str, names: Optional[dict] = None
) -> Optional[str]:
    """Why one result cannot be scored (None if it can), as a short kind of problem."""
    for key in (
        "image_id",
        "category_id",
        "score",
        "bbox" if iou_type == "bbox" else "segmentation",
    ):
        if key not in r:
            return f"no '{key}'"
    if r["image_id"] not in image_ids:
        return "an image_id that is not in the ground truth"
    if r["category_id"] not in category_ids:
        return "a category_id that is not in the ground truth"
    if (
        names
        and "category_name" in r
        and not _same_name(r["category_name"], names[r["category_id"]])
    ):
        return "a category_name other than its category_id's in the ground truth"
    try:
        if not np.isfinite(float(r["score"])):
            return "a NaN or infinite score"
        if "bbox" in r and not (
            len(r["bbox"]) == 4 and np.isfinite(np.asarray(r["bbox"], float)).all()
        ):
            return "a bbox that is not 4 finite numbers"
    except (TypeError, ValueError):
        return "a score or bbox that is not a number"
    return None


def check_results(
    results: Sequence[dict],
    image_ids,
    category_ids,
    iou_type: str,
    source: str,
    category_names: Optional[Dict[int, str]] = None,
) -> None:
    """
    Raise :class:`ResultsError` if any result has an image or category the ground truth
    does not have, a NaN/Inf score or box, or lacks a field, or (with ``category_names``,
    id -> the ground truth's name) carries a ``category_name`` that is not its category's:
    results of another vocabulary whose ids happen to exist. The LVIS API accepts them and
    reports another AP without a word.
    The message names ``source``, each kind of problem with its count and first entries.
    """
    images, categories = set(image_ids), set(category_ids)
    bad: Dict[str, List[int]] = {}
    for k, r in enumerate(results):
        problem = _result_problem(r, images, categories, iou_type, category_names)
        if problem:
            bad.setdefault(problem, []).append(k)
    if bad:
        total = sum(len(v) for v in bad.values())
        kinds = "; ".join(
            f"{len(ix)} with {problem} (entries {ix[:5]}, e.g. {_brief(results[ix[0]])})"
            for problem, ix in bad.items()
        )
        raise ResultsError(f"{source}: {total} of {len(results)} results cannot be scored: {kinds}")


def _brief(r: dict) -> str:
    keys = ("image_id", "category_id", "category_name", "score", "bbox")
    return str({k: r[k] for k in keys if k in r})


def _iou(dts: List[dict], gts: List[dict], iou_type: str) -> np.ndarray:
    if iou_type == "segm":
        d, g = [x["segmentation"] for x in dts], [x["segmentation"] for x in gts]
    else:
        d, g = [x["bbox"] for x in dts], [x["bbox"] for x in gts]
    return np.asarray(mask_utils.iou(d, g, [0] * len(gts)), dtype=np.float64).reshape(
        len(dts), len(gts)
    )


def _load_gt_and_results(gt_json: str, results, iou_type: str):
    """(LVIS ground truth, checked results list); "segm": the ground truth's masks as RLE."""
    # (the lvis package needs NumPy's removed aliases restored before it is imported)
    from lvis import LVIS

    from ..compat.numpy_aliases import ensure_numpy_aliases

    ensure_numpy_aliases()
    gt = LVIS(gt_json)
    source = results if isinstance(results, str) else "results"
    if isinstance(results, str):
        with open(results) as f:
            results = json.load(f)
    names = {c: gt.cats[c]["name"] for c in gt.get_cat_ids()}
    check_results(results, gt.get_img_ids(), gt.get_cat_ids(), iou_type, source, names)
    if iou_type == "segm":  # LVISEval computes the RLE of each ground-truth mask
        for ann in gt.anns.values():
            ann["segmentation"] = gt.ann_to_rle(ann)
    return gt, results


def _top_per_image(results: List[dict], max_dets: int) -> Dict[int, List[dict]]:
    """image id -> its ``max_dets`` highest-scoring results, as LVISResults keeps them."""
    by_image: Dict[int, List[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    for dts in by_image.values():
        dts.sort(key=lambda r: -r["score"])
        del dts[max_dets:]
    return by_image


def _greedy_match(dts: List[dict], gts: List[dict], iou_type: str) -> np.ndarray:
    """
    LVISEval's matching of one image and category: each detection (in score order) takes
    the free ground truth of highest IoU >= the threshold. Returns matched flags [n, T].
    """
    tp = np.zeros((len(dts), len(IOU_THRESHOLDS)), dtype=bool)
    if not gts:
        return tp
    ious = _iou(dts, gts, iou_type)
    for t, thr in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(gts), dtype=bool)
        for d in range(len(dts)):
            best, best_iou = -1, min(thr, 1 - 1e-10)
            for g in range(len(gts)):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
                tp[d, t] = True
    return tp


def _sorted_detections(imgs: list, scores: list, tps: list, ignored: list):
    """One category's (image indices [n], matched [n, T], ignored [n, T]), by descending score."""
    if not scores:
        empty = np.zeros((0, len(IOU_THRESHOLDS)), bool)
        return np.zeros(0, dtype=np.int64), empty, empty.copy()
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    return np.asarray(imgs)[order], np.concatenate(tps)[order], np.concatenate(ignored)[order]


class LVISAPTable:
    """
    Matched detections of one model on one LVIS-format ground truth.

    Args:
        gt_json: the LVIS-format annotation file of the evaluated split.
        results: LVIS results (list of dicts with image_id, category_id, score, bbox and,
            for "segm", segmentation as RLE), or the path of such a json file.
        iou_type: "bbox" or "segm".
        max_dets: detections kept per image (highest scores), as LVISEval's max_dets.
    """

    def __init__(self, gt_json: str, results, iou_type: str = "segm", max_dets: int = 300):
        gt, results = _load_gt_and_results(gt_json, results, iou_type)
        self.image_ids = sorted(gt.get_img_ids())
        self.category_ids = sorted(gt.get_cat_ids())
        self.frequency = {c: gt.cats[c]["frequency"] for c in self.category_ids}
        image_index = {i: k for k, i in enumerate(self.image_ids)}
        gt_by_pair: Dict[tuple, List[dict]] = {}
        for ann in gt.anns.values():
            gt_by_pair.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
        dt_by_pair: Dict[tuple, List[dict]] = {}
        for image_id, dts in _top_per_image(results, max_dets).items():
            for r in dts:
                dt_by_pair.setdefault((image_id, r["category_id"]), []).append(r)
        # per category and image: number of ground-truth objects; per category: detection
        # image indices, matched flags [n, T], ignored [n, T], in descending score order
        self._num_gt = np.zeros((len(self.category_ids), len(self.image_ids)), dtype=np.int64)
        self._dets = []
        for ci, cat in enumerate(self.category_ids):
            imgs, scores, tps, ignored = [], [], [], []
            for image_id in self.image_ids:
                img = gt.imgs[image_id]
                gts = gt_by_pair.get((image_id, cat), [])
                if not gts and cat not in img.get("neg_category_ids", []):
                    continue  # LVIS: the category is not evaluated on this image
                dts = list(dt_by_pair.get((image_id, cat), []))
                self._num_gt[ci, image_index[image_id]] = len(gts)
                if not dts:
                    continue
                dts.sort(key=lambda r: -r["score"])  # stable, as LVISEval's mergesort
                tp = _greedy_match(dts, gts, iou_type)
                not_exhaustive = cat in img.get("not_exhaustive_category_ids", [])
                imgs += [image_index[image_id]] * len(dts)
                scores += [r["score"] for r in dts]
                tps.append(tp)
                ignored.append(~tp if not_exhaustive else np.zeros_like(tp))
            self._dets.append(_sorted_detections(imgs, scores, tps, ignored))

    def category_ap(self, image_weights: Optional[np.ndarray] = None) -> np.ndarray:
        """
        AP (0..1) of every category for images counted ``image_weights`` times each
        ([num_images] ints; default once each). NaN where a category has no ground truth.
        Returns [num_categories].
        """
        w_img = (
            np.ones(len(self.image_ids))
            if image_weights is None
            else np.asarray(image_weights, float)
        )
        out = np.full(len(self.category_ids), np.nan)
        num_gt = self._num_gt @ w_img
        for ci, (imgs, tp, ig) in enumerate(self._dets):
            if num_gt[ci] == 0:
                continue
            w = w_img[imgs][:, None] * ~ig  # [n, T]
            tp_sum = np.cumsum(w * tp, axis=0)
            fp_sum = np.cumsum(w * ~tp, axis=0)
            ap = np.zeros(len(IOU_THRESHOLDS))
            for t in range(len(IOU_THRESHOLDS)):
                keep = w[:, t] > 0
                if not keep.any():
                    continue
                tps, fps = tp_sum[keep, t], fp_sum[keep, t]
                recall = tps / num_gt[ci]
                precision = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
                envelope = np.maximum.accumulate(precision[::-1])[::-1]
                idx = np.searchsorted(recall, RECALL_POINTS, side="left")
                ap[t] = np.where(
                    idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0
                ).mean()
            out[ci] = ap.mean()
        return out

    def summary(
        self, category_ap: np.ndarray, groups: Dict[str, Sequence[int]]
    ) -> Dict[str, float]:
        """AP (%) over all categories and over each group of category ids (NaN-free mean)."""
        index = {c: k for k, c in enumerate(self.category_ids)}
        out = {"AP": 100 * float(np.nanmean(category_ap))}
        for name, cats in groups.items():
            vals = category_ap[[index[c] for c in cats]]
            out[name] = 100 * float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        return out

    def frequency_groups(self) -> Dict[str, List[int]]:
        """{"APr": rare ids, "APc": common ids, "APf": frequent ids}."""
        return {f"AP{f}": [c for c in self.category_ids if self.frequency[c] == f] for f in "rcf"}


def resample_image_weights(num_images: int, num_samples: int, seed: int = 0) -> np.ndarray:
    """[num_samples, num_images] counts of each image in a resample with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(num_images, size=(num_samples, num_images))
    return np.stack([np.bincount(p, minlength=num_images) for p in picks])


def bootstrap_differences(
    tables: Dict[str, LVISAPTable],
    comparisons: Sequence[tuple],
    groups: Dict[str, Sequence[int]],
    num_samples: int = 500,
    seed: int = 0,
    level: float = 0.90,
) -> List[dict]:
    """
    Paired bootstrap over images of AP differences.

    Args:
        tables: model key -> its table (all on the same ground truth).
        comparisons: (model a, model b, metric) triples; metric is "AP" or a group name.
        groups: group name -> category ids (e.g. APr, APr-concept).
        level: the central interval's coverage.

    Returns:
        per comparison: a, b, metric, diff (a - b on the full set, AP points) and the
        interval's lo / hi.
    """
    first = next(iter(tables.values()))
    weights = resample_image_weights(len(first.image_ids), num_samples, seed)
    needed = sorted({m for a, b, _ in comparisons for m in (a, b)})
    full = {m: tables[m].summary(tables[m].category_ap(), groups) for m in needed}
    draws = {
        m: [tables[m].summary(tables[m].category_ap(w), groups) for w in weights] for m in needed
    }
    out = []
    tail = (1 - level) / 2
    for a, b, metric in comparisons:
        diffs = np.array([da[metric] - db[metric] for da, db in zip(draws[a], draws[b])])
        diffs = diffs[np.isfinite(diffs)]
        out.append(
            {
                "a": a,
                "b": b,
                "metric": metric,
                "diff": full[a][metric] - full[b][metric],
                "lo": float(np.quantile(diffs, tail)) if len(diffs) else float("nan"),
                "hi": float(np.quantile(diffs, 1 - tail)) if len(diffs) else float("nan"),
            }
        )
    return out
