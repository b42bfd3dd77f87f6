"""
Which proposals and detections the converted official model keeps, held to the official
code's rules (tests/helpers/official_selection.py states them in NumPy): boxes clipped to
all zeros are padding, equal scores keep the lower index, IoU equal to the threshold
suppresses, a class whose best box is inverted has its coordinates swapped, and boxes of
negative area are pooled from the finest level. First on boxes built for each rule, then
end to end at the official size (ResNet-50 widths, 1024 x 1024, 1000 proposals, 1203
classes, 300 detections) on an image smaller than the input, whose zero padding gives
exactly equal scores; eager and exported detections must be the same there.
"""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import vild_d2.modeling.official.rpn as official_rpn
from vild_d2.config import load_config
from vild_d2.export import export_model
from vild_d2.modeling.official import (
    LegacyBox2BoxTransform,
    OfficialROIPooler,
    OfficialViLDBoxPredictor,
    official_detections,
    official_roi_levels,
    official_rpn_proposals,
)

from .conftest import ROOT
from .helpers import official_selection as reference

IDENTITY = LegacyBox2BoxTransform((1.0, 1.0, 1.0, 1.0))


def _proposals(boxes, logits, pre=1000, post=1000, nms=0.7, size=(64, 64)):
    """Proposals of one level whose anchors are ``boxes`` (zero deltas keep them)."""
    boxes = torch.tensor(boxes, dtype=torch.float32)
    logits = torch.tensor([logits], dtype=torch.float32)
    deltas = torch.zeros(1, len(boxes), 4)
    return official_rpn_proposals([boxes], [logits], [deltas], size, IDENTITY, pre, post, nms)[0]


def test_a_proposal_clipped_into_the_corner_is_padding():
    # the best anchor lies outside the image above and left of it: clipped, all four 0
    result = _proposals([[-9, -9, -3, -2], [10, 10, 20, 20], [30, 30, 40, 40]], [5, 1, 0], post=4)
    assert len(result) == 4  # always post_nms_topk, padding last
    boxes = result.proposal_boxes.tensor
    assert boxes[:2].tolist() == [[10, 10, 20, 20], [30, 30, 40, 40]]
    assert boxes[2:].abs().sum() == 0
    assert torch.isinf(result.objectness_logits[2:]).all()


def test_equal_proposal_scores_keep_the_lower_index_first():
    # a chain of boxes 1 px apart, every score equal: the official keeps every other one
    boxes = [[float(i), 0, i + 10.0, 10] for i in range(40)]
    kept = _proposals(boxes, [0.0] * len(boxes), post=40).proposal_boxes.tensor
    expected = reference.greedy(
        np.arange(40), np.float32(boxes), reference.suppression(np.float32(boxes), 0.7), 40
    )
    assert kept[: len(expected), 0].tolist() == [boxes[i][0] for i in expected]
    assert expected[:3] == [0, 2, 4]


def _detect(boxes, scores, nms=0.5, total=10):
    """
    (proposal indices, classes, scores) that the converted model's box predictor keeps of
    boxes [R, 4] with class scores [R, C] (its inference, fed those).
    """
    boxes, scores = torch.tensor(boxes), torch.tensor(scores)

    class Predictor:  # what OfficialViLDBoxPredictor.inference reads of itself
        test_score_thresh, test_nms_thresh, test_topk_per_image = 0.0, nms, total

        def predict_boxes(self, predictions, proposals):
            return (boxes,)

        def predict_probs(self, predictions, proposals):
            return (torch.cat([scores, torch.zeros(len(scores), 1)], dim=1),)

    results, kept = OfficialViLDBoxPredictor.inference(Predictor(), None, [Instances((99, 99))])
    return kept[0].tolist(), results[0].pred_classes.tolist(), results[0].scores.tolist()


def test_iou_equal_to_the_threshold_suppresses():
    # IoU exactly 0.5 (80 / 160): suppressed; just above the IoU: kept
    pair, scores = [[0.0, 0, 12, 10], [4.0, 0, 16, 10]], [[0.9], [0.8]]
    assert _detect(pair, scores, nms=0.5)[0] == [0]
    assert _detect(pair, scores, nms=0.50001)[0] == [0, 1]


def test_detection_boxes_of_all_zeros_are_dropped():
    kept, _, scores = _detect([[0.0, 0, 0, 0], [5.0, 5, 9, 9]], [[0.9], [0.2]])
    assert kept == [1] and scores == [pytest.approx(0.2)]


def test_equal_detection_scores_are_ordered_by_class_then_proposal():
    boxes = [[0.0, 0, 10, 10], [20.0, 20, 30, 30], [40.0, 40, 50, 50]]
    kept, classes, _ = _detect(boxes, [[0.5] * 4] * 3, total=12)
    assert classes == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert kept == [0, 1, 2] * 4


def test_an_inverted_best_box_turns_off_the_suppression_of_its_class():
    # class 0's best box is 0.4 px wide and inverted (x2 < x1): TensorFlow swaps x1 and x2
    # of all class-0 boxes, so the two overlapping boxes below no longer overlap
    boxes = [[30.0, 0, 29.6, 10], [0.0, 0, 10, 10], [1.0, 0, 11, 10]]
    kept, classes, _ = _detect(boxes, [[0.9, 0.1], [0.8, 0.8], [0.7, 0.7]])
    found = sorted(zip(classes, kept))
    assert found == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]  # class 1: box 2 suppressed


def test_only_the_needed_candidates_give_what_all_candidates_give():
    # official_detections puts only the best candidates through NMS; the reference all
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.3, 60, (300, 2))], 1).astype(np.float32)
    boxes[:10] = 0
    boxes[10:20, 2] = boxes[10:20, 0] - 0.3
    scores = (rng.integers(1, 40, (300, 50)) / 40).astype(np.float32)  # many exact ties
    for total in (5, 100, 300):
        index, classes, values = reference.detections(boxes, scores, 0.0, 0.5, total)
        _, ours, our_classes, kept = official_detections(
            torch.from_numpy(boxes), torch.from_numpy(scores), 0.0, 0.5, total
        )
        assert kept.tolist() == index.tolist() and our_classes.tolist() == classes.tolist()
        assert ours.tolist() == values.tolist()


def test_a_box_of_negative_area_is_pooled_from_the_finest_level():
    boxes = torch.tensor([[40.0, 40, 39.7, 60], [0, 0, 2000, 2000], [0, 0, 0, 0]])
    assert official_roi_levels(boxes, 2, 6).tolist() == [2, 6, 2]
    features = [torch.rand(1, 3, 256 // s, 256 // s) + 1 for s in (4, 8, 16, 32, 64)]
    pooled = OfficialROIPooler(14, [4, 8, 16, 32, 64])(features, [Boxes(boxes[:1])])
    assert pooled.abs().min() > 0  # sampled from P2, not left at zero


# ---------------------------------------------------------------- at the official size
SIZE, PROPOSALS, CLASSES, DETECTIONS = 1024, 1000, 1203, 300


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The official R50 ViLD (random weights), its run on one image and what it was given."""
    vocabulary = tmp_path_factory.mktemp("vocabulary") / "lvis.npy"
    rng = np.random.default_rng(0)
    np.save(vocabulary, rng.normal(size=(CLASSES, 512)).astype(np.float32))
    opts = ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    opts += ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", str(vocabulary)]
    opts += ["MODEL.VILD.TEST_TEXT_EMBEDDINGS", str(vocabulary)]
    cfg = load_config(f"{ROOT}/configs/LVIS-OV-official/vild_R_50_FPN.yaml", opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.zeros(3, 600, 800)  # resized already; the rest of 1024 x 1024 is padding
    image[:] = torch.from_numpy(rng.integers(0, 256, (3, 600, 800))).float()
    seen = {}
    _record(official_rpn, "official_rpn_proposals", seen, "rpn")
    predictor = model.roi_heads.box_predictor
    _record(predictor, "predict_boxes", seen, "boxes")
    _record(predictor, "predict_probs", seen, "probs")
    try:
        with torch.no_grad():
            out = model.inference([{"image": image}], do_postprocess=False)[0]
    finally:
        official_rpn.official_rpn_proposals = seen["rpn_original"]
        del predictor.predict_boxes, predictor.predict_probs  # the class's again
    return model, image, out, seen


def _record(owner, name, seen, key):
    """Replace ``owner.name`` by a function that keeps its arguments and result in seen."""
    original = getattr(owner, name)
    seen[key + "_original"] = original

    def recording(*args):
        seen[key] = (args, original(*args))
        return seen[key][1]

    setattr(owner, name, recording)


def test_full_size_proposals_are_the_official_ones(full_size):
    _, _, _, seen = full_size
    (anchors, logits, deltas, size, transform, pre, post, nms), result = seen["rpn"]
    assert (pre, post, nms, size) == (1000, PROPOSALS, 0.7, (SIZE, SIZE))
    levels = []
    for level_anchors, level_logits, level_deltas in zip(anchors, logits, deltas):
        boxes = transform.apply_deltas(level_deltas[0], level_anchors)
        boxes = boxes.clamp(min=0).clamp(max=SIZE - 1)
        levels.append((level_logits[0].sigmoid().numpy(), boxes.numpy()))
    boxes, scores = reference.proposals(levels, pre, post, nms)
    ours = result[0]
    assert len(ours) == PROPOSALS
    assert torch.equal(ours.proposal_boxes.tensor, torch.from_numpy(boxes))
    assert torch.equal(ours.objectness_logits.sigmoid(), torch.from_numpy(scores))
    # the padding gave some anchors of a level equal scores: their order was tested
    tied = [np.unique(np.sort(s)[-pre:], return_counts=True)[1].max() for s, _ in levels]
    assert max(tied) >= 2


def test_full_size_detections_are_the_official_ones(full_size):
    model, _, out, seen = full_size
    boxes, scores = seen["boxes"][1][0], seen["probs"][1][0][:, :-1]  # background last
    predictor = model.roi_heads.box_predictor
    settings = (predictor.test_score_thresh, predictor.test_nms_thresh)
    assert settings + (predictor.test_topk_per_image, scores.shape[1]) == (
        0.0, 0.5, DETECTIONS, CLASSES
    )  # fmt: skip
    index, classes, values = reference.detections(
        boxes.numpy(), scores.numpy(), *settings, DETECTIONS
    )
    assert len(out) == DETECTIONS
    assert out.pred_classes.tolist() == classes.tolist()
    assert torch.equal(out.scores, torch.from_numpy(values))
    assert torch.equal(out.pred_boxes.tensor, boxes[torch.from_numpy(index)])
    assert out.pred_boxes.tensor.gt(0).any(dim=1).all()  # no padding among them


def test_full_size_export_gives_the_eager_detections(full_size):
    model, image, eager, _ = full_size
    vocabulary = model.roi_heads.box_predictor.classifier.test_class_embeddings
    with torch.no_grad():
        out = export_model(model, "scripting")(image, vocabulary)
    assert out["classes"].tolist() == eager.pred_classes.tolist()
    assert (out["boxes"] - eager.pred_boxes.tensor).abs().max() <= 1e-3
    assert (out["scores"] - eager.scores).abs().max() <= 1e-5
    assert (out["masks"] - eager.pred_masks).abs().max() <= 1e-5
