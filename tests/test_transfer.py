"""Transfer: one trained model scored on several test datasets, each with its own vocabulary."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import build_model

from vild_d2.config import ConfigError
from vild_d2.data.datasets import register_lvis_format
from vild_d2.engine import Trainer
from vild_d2.engine.trainer import build_config
from vild_d2.world.spec import TRANSFER_COLOURS, category_names, spec_from_json
from vild_d2.world.splits import generate_transfer_split

from .conftest import ROOT

VILD_CONFIG = os.path.join(ROOT, "configs", "shapes_world", "vild_R_18_FPN_tiny.yaml")
D = 32


@pytest.fixture(scope="module")
def transfer(tiny_lvis, tmp_path_factory):
    path = generate_transfer_split(tiny_lvis["root"], num_images=2)
    if "tiny_transfer" not in DatasetCatalog.list():
        register_lvis_format("tiny_transfer", path, tiny_lvis["root"], novel_frequencies=("r",))
    folder = tmp_path_factory.mktemp("vocabularies")
    files = {}
    for name, rows in (("world", 48), ("transfer", len(json.load(open(path))["categories"]))):
        files[name] = str(folder / f"{name}.npy")
        np.save(files[name], np.random.default_rng(rows).normal(size=(rows, D)).astype(np.float32))
    return {"json": path, "files": files}


def test_transfer_split_is_another_vocabulary(tiny_lvis, transfer):
    with open(transfer["json"]) as f:
        data = json.load(f)
    with open(tiny_lvis["json"]["train"]) as f:
        world = {c["name"]: c for c in json.load(f)["categories"]}
    spec = spec_from_json(tiny_lvis["json"]["train"])
    names = [c["name"] for c in data["categories"]]
    assert names == [
        n for c in TRANSFER_COLOURS for n in category_names(spec) if n.startswith(c + " ")
    ]
    assert names != [
        n for n in category_names(spec) if n in names
    ]  # another order than the world's
    assert [c["id"] for c in data["categories"]] == list(range(1, len(names) + 1))
    for c in data[
        "categories"
    ]:  # frequency (so APr is the novel categories' AP) and kind carried over
        assert (c["frequency"], c["novel_kind"]) == (
            world[c["name"]]["frequency"],
            world[c["name"]]["novel_kind"],
        )
    for img in data["images"]:
        shown = {a["category_id"] for a in data["annotations"] if a["image_id"] == img["id"]}
        assert set(img["neg_category_ids"]) == set(range(1, len(names) + 1)) - shown
        assert os.path.isfile(os.path.join(tiny_lvis["root"], img["file_name"]))


def _cfg(tiny_lvis, transfer, tmp_path, *opts):
    class Args:
        config_file = VILD_CONFIG
        eval_only = True

    Args.opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.VILD.EMBED_DIM",
        str(D),
        "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        transfer["files"]["world"],
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DATASETS.TRAIN",
        f"('{tiny_lvis['names']['train']}',)",
        "DATASETS.TEST",
        f"('{tiny_lvis['names']['val']}', 'tiny_transfer')",
        "OUTPUT_DIR",
        str(tmp_path),
        *opts,
    ]
    return build_config(Args)


class _Recorder(DatasetEvaluator):
    """Keeps the highest predicted class and the model's vocabulary while this dataset runs."""

    def __init__(self, model):
        self.model = model

    def reset(self):
        self.max_class, self.vocabulary = -1, None

    def process(self, inputs, outputs):
        for out in outputs:
            self.max_class = max(self.max_class, int(out["instances"].pred_classes.max()))
        self.vocabulary = (
            self.model.roi_heads.box_predictor.classifier.test_class_embeddings.clone()
        )

    def evaluate(self):
        return {"max_class": self.max_class}


def test_each_test_dataset_is_scored_with_its_own_vocabulary(tiny_lvis, transfer, tmp_path):
    cfg = _cfg(
        tiny_lvis,
        transfer,
        tmp_path,
        "DATASETS.TEXT_EMBEDDINGS_TEST",
        f"('{transfer['files']['world']}', '{transfer['files']['transfer']}')",
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    recorders = [_Recorder(model), _Recorder(model)]
    results = Trainer.test(cfg, model, recorders)
    assert list(results) == [tiny_lvis["names"]["val"], "tiny_transfer"]
    num_transfer = len(MetadataCatalog.get("tiny_transfer").thing_classes)
    assert num_transfer < 48
    for recorder, name, classes in zip(recorders, ("world", "transfer"), (48, num_transfer)):
        expected = F.normalize(torch.from_numpy(np.load(transfer["files"][name])), dim=1)
        assert torch.allclose(recorder.vocabulary, expected)
        assert 0 <= recorder.max_class < classes
    # with score threshold 0 a random model spreads detections over the classes: the world's
    # vocabulary reaches past the transfer one's size, so scoring the transfer set with it fails
    assert recorders[0].max_class >= num_transfer
    # and the default evaluators (LVIS) give one result per dataset
    results = Trainer.test(cfg, model)
    assert set(results) == {tiny_lvis["names"]["val"], "tiny_transfer"}
    assert all("AP" in r["segm"] for r in results.values())


def test_a_vocabulary_that_does_not_fit_a_test_dataset_fails_at_start(
    tiny_lvis, transfer, tmp_path
):
    with pytest.raises(
        ConfigError,
        match=r"test dataset 'tiny_transfer'.*world.npy.*48 rows.*'tiny_transfer' has 24 classes",
    ):
        _cfg(tiny_lvis, transfer, tmp_path)  # one vocabulary (the training one) for both
    with pytest.raises(
        ConfigError, match=r"TEXT_EMBEDDINGS_TEST has 1 files but DATASETS.TEST has 2"
    ):
        _cfg(
            tiny_lvis,
            transfer,
            tmp_path,
            "DATASETS.TEXT_EMBEDDINGS_TEST",
            f"('{transfer['files']['world']}',)",
        )
