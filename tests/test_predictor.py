"""One predictor for every model the project draws or serves: open vocabulary or fixed."""

import json

import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from vild_d2.config import load_config
from vild_d2.inference import OpenVocabularyPredictor, Vocabulary

from .conftest import TINY_CONFIG


def test_a_fixed_classifier_runs_as_detectron2_runs_it_and_takes_no_vocabulary(tmp_path):
    torch.manual_seed(0)
    opts = ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]  # random weights: keep every box
    model = build_model(load_config(TINY_CONFIG, opts))
    torch.save({"model": model.state_dict()}, tmp_path / "model.pth")
    cfg = load_config(TINY_CONFIG, opts + ["MODEL.WEIGHTS", str(tmp_path / "model.pth")])

    predictor = OpenVocabularyPredictor(cfg)
    assert not predictor.open_vocabulary
    image = np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    found = predictor(image)
    expected = DefaultPredictor(cfg)(image)["instances"]
    assert len(found) == len(expected) > 0 and found.image_size == (72, 96)
    torch.testing.assert_close(found.pred_boxes.tensor, expected.pred_boxes.tensor)
    torch.testing.assert_close(found.scores, expected.scores)
    assert torch.equal(found.pred_classes, expected.pred_classes)
    assert torch.equal(found.pred_masks, expected.pred_masks)

    with pytest.raises(ValueError, match="GeneralizedRCNN has a fixed classifier"):
        predictor.set_vocabulary(Vocabulary(["a"], torch.ones(1, 8)))


def _exported(path, **info):
    module = torch.jit.script(torch.nn.Identity())
    torch.jit.save(module, str(path), _extra_files={"vild_d2.json": json.dumps(info)})
    return str(path)


def test_an_exported_files_info_is_read_by_its_layout_version(tmp_path):
    layout_1 = dict(input_format="BGR", min_size_test=64, max_size_test=96, embed_dim=8)
    layout_1.update(ensemble=False, mask_on=False, export_method="scripting")
    old = OpenVocabularyPredictor(torchscript=_exported(tmp_path / "old.ts", **layout_1))
    assert old.info["tf1_resize_test"] is False and old.info["format_version"] == 2
    newer = _exported(tmp_path / "newer.ts", **layout_1, tf1_resize_test=True, format_version=3)
    with pytest.raises(ValueError, match="newer.ts: exported by a newer vild_d2 .info layout 3"):
        OpenVocabularyPredictor(torchscript=newer)
