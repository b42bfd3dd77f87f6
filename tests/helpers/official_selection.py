"""
A plain NumPy statement of the official ViLD's box selection, written from the behaviour
of the official code (tensorflow/tpu ``ops/nms.py``, ``ops/roi_ops.py``,
``projects/vild/ops/postprocess_ops.py`` and TensorFlow's ``non_max_suppression_padded``),
for the tests to hold vild_d2's torch version to. Slow and obvious on purpose: one greedy
loop per class, TensorFlow's IoU formula with its 1e-8, no shortcut.
"""

from typing import List, Tuple

import numpy as np

EPS = np.float32(1e-8)
PRE_NMS_PER_CLASS = 1000  # postprocess.pre_nms_num_boxes


def tf_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a [4] (the suppressor) with boxes b [N, 4], XYXY float32, as TensorFlow's."""
    iw = np.maximum(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), np.float32(0))
    ih = np.maximum(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), np.float32(0))
    inter = iw * ih
    area_a = (a[3] - a[1]) * (a[2] - a[0])
    area_b = (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0])
    return inter / (area_a + area_b - inter + EPS)


def suppression(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """[N, N] bool: box i suppresses box j (IoU >= threshold as float32)."""
    return np.stack([tf_iou(box, boxes) >= np.float32(threshold) for box in boxes])


def greedy(order: np.ndarray, boxes: np.ndarray, suppresses: np.ndarray, limit: int) -> List[int]:
    """Visit ``order``; keep a box unless padding (no coordinate > 0) or suppressed."""
    removed = np.zeros(len(boxes), dtype=bool)
    kept: List[int] = []
    for j in order:
        if removed[j] or not (boxes[j] > 0).any():
            continue
        kept.append(int(j))
        removed |= suppresses[j]
        if len(kept) == limit:
            break
    return kept


def descending(scores: np.ndarray) -> np.ndarray:
    """Indices by score, best first, equal scores by index (tf.nn.top_k)."""
    return np.argsort(-scores, kind="stable")


def proposals(
    levels: List[Tuple[np.ndarray, np.ndarray]], pre: int, post: int, threshold: float
) -> Tuple[np.ndarray, np.ndarray]:
    """
    levels: per FPN level, (scores [A], decoded clipped boxes [A, 4]) of every anchor.
    Returns the post proposals' boxes [post, 4] and scores [post] (padding: zeros).
    """
    all_boxes, all_scores = [], []
    for scores, boxes in levels:
        order = descending(scores)[:pre]
        boxes, scores = boxes[order], scores[order]
        kept = greedy(np.arange(len(boxes)), boxes, suppression(boxes, threshold), post)
        padding = post - len(kept)
        all_boxes.append(np.concatenate([boxes[kept], np.zeros((padding, 4), np.float32)]))
        all_scores.append(np.concatenate([scores[kept], np.zeros(padding, np.float32)]))
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    best = descending(scores)[:post]
    return boxes[best], scores[best]


def detections(
    boxes: np.ndarray, scores: np.ndarray, score_threshold: float, threshold: float, total: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    boxes [R, 4] (class-agnostic), scores [R, C]. Returns the kept proposal indices,
    classes and scores, in the official order.
    """
    shared = suppression(boxes, threshold)
    found_index, found_class, found_score = [], [], []
    for c in range(scores.shape[1]):
        order = descending(scores[:, c])[:PRE_NMS_PER_CLASS]
        first = boxes[order[0]]
        class_boxes = boxes * (scores[:, c] > score_threshold)[:, None]  # TF zeroes them
        if scores[order[0], c] > score_threshold and (first[0] > first[2] or first[1] > first[3]):
            class_boxes = class_boxes.copy()
            if first[0] > first[2]:
                class_boxes[:, [0, 2]] = class_boxes[:, [2, 0]]
            if first[1] > first[3]:
                class_boxes[:, [1, 3]] = class_boxes[:, [3, 1]]
            suppresses = suppression(class_boxes, threshold)
        else:
            suppresses = shared
        kept = greedy(order, class_boxes, suppresses, total)
        found_index += kept
        found_class += [c] * len(kept)
        found_score += [scores[k, c] for k in kept]
    best = descending(np.asarray(found_score, np.float32))[:total]
    return (
        np.asarray(found_index, np.int64)[best],
        np.asarray(found_class, np.int64)[best],
        np.asarray(found_score, np.float32)[best],
    )
