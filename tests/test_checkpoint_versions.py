"""Checkpoints record each vild_d2 module's layout version: newer refused, older upgraded."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from vild_d2.checkpoint import load_inference_weights
from vild_d2.config import load_config
from vild_d2.modeling import ZeroShotClassifier
from vild_d2.modeling.versioned import CheckpointVersionError

from .conftest import ROOT

CONFIG = os.path.join(ROOT, "configs", "shapes_world", "vild_R_18_FPN_tiny.yaml")
DATASET = "test_versions_ov"
CLASSIFIER = "roi_heads.box_predictor.classifier"


@pytest.fixture(scope="module")
def model_and_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("versions")
    if DATASET not in MetadataCatalog.list():
        MetadataCatalog.get(DATASET).set(thing_classes=[f"class {i}" for i in range(6)])
    np.save(folder / "train.npy", np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32))
    opts = ["MODEL.DEVICE", "cpu", "MODEL.VILD.EMBED_DIM", "16", "MODEL.ROI_HEADS.NUM_CLASSES", "6"]
    opts += ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", str(folder / "train.npy")]
    opts += ["DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", "()"]
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, opts)).eval()
    state = model.state_dict()
    torch.save({"model": state}, folder / "model.pth")
    return model, state, folder


def test_every_vild_module_records_its_layout_version(model_and_checkpoint):
    _, state, folder = model_and_checkpoint
    saved = torch.load(folder / "model.pth")["model"]._metadata  # as torch.save kept it
    for prefix in ("", "roi_heads", "roi_heads.box_predictor", CLASSIFIER):
        assert saved[prefix]["version"] == 1, prefix


def test_a_checkpoint_of_a_newer_layout_is_refused_in_one_line(model_and_checkpoint):
    model, state, folder = model_and_checkpoint
    newer = state.copy()
    newer._metadata = {k: dict(v) for k, v in state._metadata.items()}
    newer._metadata[CLASSIFIER]["version"] = 2
    torch.save({"model": newer}, folder / "newer.pth")
    with pytest.raises(CheckpointVersionError) as e:
        load_inference_weights(model, str(folder / "newer.pth"))
    message = str(e.value)
    assert f"'{CLASSIFIER}.' (ZeroShotClassifier) has layout version 2" in message
    assert "written by a newer vild_d2" in message and len(message.splitlines()) == 1


def test_a_checkpoint_of_an_older_layout_is_upgraded(model_and_checkpoint, monkeypatch):
    """As a rename would be: layout 2 calls the projection 'projection', layout 1 'proj'."""
    model, state, folder = model_and_checkpoint
    older = {
        k.replace(f"{CLASSIFIER}.projection", f"{CLASSIFIER}.proj"): v for k, v in state.items()
    }
    older = type(state)(older)
    older._metadata = state._metadata  # every module at layout 1

    def rename(state_dict, prefix):
        for key in [k for k in state_dict if k.startswith(prefix + "proj.")]:
            state_dict[prefix + "projection." + key[len(prefix + "proj.") :]] = state_dict.pop(key)

    monkeypatch.setattr(ZeroShotClassifier, "_version", 2)
    monkeypatch.setattr(ZeroShotClassifier, "_upgrades", {1: rename})
    torch.save({"model": older}, folder / "older.pth")
    with torch.no_grad():
        for p in model.roi_heads.box_predictor.classifier.parameters():
            p.zero_()
    load_inference_weights(model, str(folder / "older.pth"))
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
