"""
Fine-tuning from converted official weights (a new vocabulary, distillation, the official
box coding in the losses) and LVIS evaluation of the converted model through the Trainer,
as ``train_net.py`` runs them.
"""

import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog

from vild_d2.config import load_config
from vild_d2.data.region_store import ShardWriter, create_region_store, finalize_region_store
from vild_d2.engine import Trainer

from .conftest import needs_shared

pytestmark = needs_shared

D = 512  # the converted model's embedding size
SIZE = 128  # small inputs: the tiny world's images are 96 px


@pytest.fixture(scope="module")
def world(tiny_lvis, tmp_path_factory):
    """A 48-class vocabulary of D = 512 and a region store of the tiny world's train images."""
    folder = tmp_path_factory.mktemp("official_finetune")
    rng = np.random.default_rng(0)
    vocabulary = str(folder / "vocabulary.npy")
    np.save(vocabulary, rng.normal(size=(48, D)).astype(np.float32))
    store = str(folder / "store")
    create_region_store(store, teacher="random", embed_dim=D)
    with ShardWriter(store, 0) as writer:
        for d in DatasetCatalog.get(tiny_lvis["names"]["train"]):
            xy = rng.uniform(0, 60, (16, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(8, 30, (16, 2))], 1)
            emb = rng.normal(size=(16, D))
            writer.add(
                d["image_id"], boxes, emb / np.linalg.norm(emb, axis=1, keepdims=True), (96, 96)
            )
    finalize_region_store(store)
    return {"vocabulary": vocabulary, "store": store}


def _cfg(converted_oracle, tiny_lvis, world, tmp_path, *extra):
    return load_config(
        os.path.join(converted_oracle, "config.yaml"),
        [
            "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path),
            "DATASETS.TRAIN", f"('{tiny_lvis['names']['train']}',)",
            "DATASETS.TEST", f"('{tiny_lvis['names']['val']}',)",
            "DATASETS.REGION_STORE_TRAIN", world["store"],
            "MODEL.ROI_HEADS.NUM_CLASSES", "48",
            "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", world["vocabulary"],
            "MODEL.VILD.TEST_TEXT_EMBEDDINGS", world["vocabulary"],
            "MODEL.FPN.SIZE_DIVISIBILITY", str(SIZE), "INPUT.LSJ.IMAGE_SIZE", str(SIZE),
            "INPUT.MIN_SIZE_TEST", str(SIZE), "INPUT.MAX_SIZE_TEST", str(SIZE),
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
            *extra,
        ],
    )  # fmt: skip


def test_fine_tuning_from_converted_weights(converted_oracle, tiny_lvis, world, tmp_path):
    cfg = _cfg(converted_oracle, tiny_lvis, world, tmp_path)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)  # MODEL.WEIGHTS: the converted checkpoint
    converted = torch.load(cfg.MODEL.WEIGHTS, weights_only=True)["model"]
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in converted.items())
    trainer.train()
    losses = trainer.storage.latest()
    for name in ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"):
        assert np.isfinite(losses[name][0]), name
    assert losses["loss_image"][0] > 0  # ViLD-ensemble's image head learns from the store
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("backbone.bottom_up.res2.") for k in changed)  # FREEZE_AT 2
    for prefix in ("backbone.bottom_up.res3.", "roi_heads.box_head.", "roi_heads.image_head."):
        assert any(k.startswith(prefix) for k in changed), prefix
    assert os.path.isfile(tmp_path / "model_final.pth")


def test_lvis_evaluation_of_the_converted_model(converted_oracle, tiny_lvis, world, tmp_path):
    cfg = _cfg(converted_oracle, tiny_lvis, world, tmp_path)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    results = Trainer.test(cfg, model)
    for task in ("bbox", "segm"):
        assert {"AP", "APr", "APc", "APf"} <= set(results[task])
        assert all(np.isfinite(v) or np.isnan(v) for v in results[task].values())
