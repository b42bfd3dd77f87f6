"""Evaluation never reuses stale ground truth after the annotations change."""

import json
import os
import subprocess
import sys

import numpy as np

from .conftest import ROOT, TINY_CONFIG
from .test_ov_datasets import _coco_json

# One process = one user's evaluation: register the OV-COCO val json, feed its ground truth
# as predictions, print AP50-all. Run twice on the same output folder (as a re-run would).
EVALUATE = r"""
import sys, json, torch
import vild_d2
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from vild_d2.config import load_config
from vild_d2.data.datasets import register_coco_ov
from vild_d2.evaluation import build_evaluator
json_file, out, config = sys.argv[1:4]
register_coco_ov("gt_cache_val", json_file, "/nonexistent", train=False)
evaluator = build_evaluator(load_config(config, ["MODEL.MASK_ON", "False"]), "gt_cache_val", out)
evaluator.reset()
for d in DatasetCatalog.get("gt_cache_val"):
    inst = Instances((d["height"], d["width"]))
    inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"],
                                                          BoxMode.XYXY_ABS)
                                          for a in d["annotations"]]).reshape(-1, 4))
    inst.scores = torch.ones(len(d["annotations"]))
    inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.long)
    evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
print("AP50-all", evaluator.evaluate()["bbox"]["AP50-all"])
"""


def _ap50(json_file, out, tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE)
    proc = subprocess.run(
        [sys.executable, str(script), str(json_file), str(out), TINY_CONFIG],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(proc.stdout.strip().splitlines()[-1].split()[-1])


def test_changed_annotations_are_evaluated_against_themselves(tmp_path):
    json_file, out = tmp_path / "val.json", tmp_path / "eval"
    _coco_json(str(json_file), np.random.default_rng(0))
    assert abs(_ap50(json_file, out, tmp_path) - 100) < 1e-6
    data = json.loads(json_file.read_text())
    for a in data["annotations"][::2]:  # the annotations move; the predictions follow them
        a["bbox"][0] += 120.0
        a["segmentation"] = [
            [v + 120.0 if i % 2 == 0 else v for i, v in enumerate(a["segmentation"][0])]
        ]
    json_file.write_text(json.dumps(data))
    assert (
        abs(_ap50(json_file, out, tmp_path) - 100) < 1e-6
    )  # a stale cache would score the old boxes
    caches = [f for f in os.listdir(out) if "_coco_format." in f]
    assert len(caches) == 2  # one per content; the first is still valid for the old annotations
