"""Proposal recall split into novel and base objects (the RPN's evaluator)."""

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from vild_d2.config import load_config
from vild_d2.evaluation import ProposalRecallEvaluator, build_evaluator, recall_limits

from .conftest import ROOT

NAME = "recall_test_dataset"


@pytest.fixture(scope="module")
def dataset():
    def ann(box, cat, crowd=0):
        return {"bbox": box, "bbox_mode": BoxMode.XYWH_ABS, "category_id": cat, "iscrowd": crowd}

    dicts = [
        {
            "image_id": 1,
            "height": 200,
            "width": 200,
            "annotations": [
                ann([0, 0, 100, 100], 2),  # novel
                ann([100, 100, 50, 50], 0),  # base
                ann([0, 100, 10, 10], 1, crowd=1),  # crowd: not counted
            ],
        },
        {
            "image_id": 2,
            "height": 200,
            "width": 200,
            "annotations": [ann([50, 50, 20, 20], 1)],
        },  # base
    ]
    if NAME not in DatasetCatalog.list():
        DatasetCatalog.register(NAME, lambda: dicts)
        MetadataCatalog.get(NAME).set(thing_classes=["a", "b", "c"], novel_class_ids=[2])
    return NAME


def _proposals(boxes, logits):
    inst = Instances((200, 200))
    inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.objectness_logits = torch.tensor(logits, dtype=torch.float32)
    return {"proposals": inst}


def test_recall_by_rank_iou_and_split(dataset):
    ev = ProposalRecallEvaluator(dataset, limits=(100, 300), distributed=False)
    ev.reset()
    far = [[190.0, 190.0, 199.0, 199.0]]
    # image 1: the novel object exactly matched by the best proposal (given last, so the
    # evaluator must sort by objectness); the base object matched at IoU 0.72 by the
    # 150th proposal only.
    boxes1 = far * 149 + [[100.0, 100.0, 150.0, 136.0]] + far * 50 + [[0.0, 0.0, 100.0, 100.0]]
    logits1 = [-float(i) for i in range(200)] + [10.0]
    # image 2: nothing near its base object
    ev.process(
        [{"image_id": 1}, {"image_id": 2}], [_proposals(boxes1, logits1), _proposals(far, [0.0])]
    )
    r = ev.evaluate()["proposals"]
    assert r["R50_novel@100"] == r["R50_novel@300"] == 100.0
    assert r["AR_novel@100"] == pytest.approx(100.0)
    assert r["R50_base@100"] == 0.0  # the base match is the 150th proposal
    assert r["R50_base@300"] == pytest.approx(50.0)  # 1 of 2 base objects
    assert r["AR_base@300"] == pytest.approx(25.0)  # IoU 0.72 passes 5 of 10 thresholds, for 1 of 2
    assert r["R50@300"] == pytest.approx(100 * 2 / 3)  # the crowd region is not an object
    assert r["R50@100"] == pytest.approx(100 / 3)


def test_no_proposals_and_no_novel_split():
    name = "recall_test_no_novel"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(
            name,
            lambda: [
                {
                    "image_id": 7,
                    "height": 50,
                    "width": 50,
                    "annotations": [
                        {"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
                    ],
                }
            ],
        )
        MetadataCatalog.get(name).set(thing_classes=["a"])
    ev = ProposalRecallEvaluator(name, limits=(10,), distributed=False)
    ev.reset()
    ev.process([{"image_id": 7}], [_proposals([], [])])
    r = ev.evaluate()["proposals"]
    assert r == {"AR@10": 0.0, "R50@10": 0.0}  # no novel/base keys without novel categories
    with pytest.raises(KeyError, match="image id 8"):
        ev.process([{"image_id": 8}], [_proposals([], [])])


def test_limits_and_rpn_config_uses_it(dataset):
    assert recall_limits(300) == [100, 300]
    assert recall_limits(1000) == [100, 300, 1000]
    assert recall_limits(50) == [50]
    cfg = load_config(f"{ROOT}/configs/shapes_world/rpn_R_18_FPN_tiny.yaml")
    ev = build_evaluator(cfg, dataset, output_dir="/tmp/unused")
    assert isinstance(ev, ProposalRecallEvaluator) and ev._limits == [100, 300]
    assert len(ev._gt) == 2
