"""One CPU training iteration through train_net's Trainer, then LVIS evaluation."""

import copy

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.structures.masks import polygons_to_bitmask

from vild_d2.config import load_config
from vild_d2.engine import Trainer
from vild_d2.evaluation import build_evaluator

from .conftest import TINY_CONFIG


def _tiny_cfg(tiny_lvis, tmp_path):
    return load_config(
        TINY_CONFIG,
        [
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TRAIN",
            f"('{tiny_lvis['names']['train']}',)",
            "DATASETS.TEST",
            f"('{tiny_lvis['names']['val']}',)",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "1",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path),
        ],
    )


def test_one_iteration_then_lvis_eval(tiny_lvis, tmp_path):
    cfg = _tiny_cfg(tiny_lvis, tmp_path)
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > 0.5 * len(before)
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses[0][0]))

    results = Trainer.test(cfg, trainer.model)
    for task in ("bbox", "segm"):
        assert {"AP", "APr", "APc", "APf"} <= set(results[task])


def test_lvis_evaluator_scores_ground_truth_as_perfect(tiny_lvis, tmp_path):
    """Feeding the ground truth as predictions must give AP = 100 in every group."""
    cfg = _tiny_cfg(tiny_lvis, tmp_path)
    name = tiny_lvis["names"]["val"]
    evaluator = build_evaluator(cfg, name, str(tmp_path / "eval"))
    assert type(evaluator).__name__ == "LVISEvaluator"
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        anns = d["annotations"]
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(
            torch.tensor(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
            )
        )
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns])
        inst.pred_masks = _rasterize(anns, d)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()
    freqs = set(
        MetadataCatalog.get(name).class_frequency[a["category_id"]]
        for d in DatasetCatalog.get(name)
        for a in d["annotations"]
    )
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0)
        for f in freqs:
            assert results[task]["AP" + f] == pytest.approx(100.0)


def _rasterize(anns, d):
    return torch.stack(
        [
            torch.from_numpy(
                polygons_to_bitmask(copy.deepcopy(a["segmentation"]), d["height"], d["width"])
            )
            for a in anns
        ]
    )
