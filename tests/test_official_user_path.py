"""
The user's path with a converted official checkpoint: fine-tuning from it (a new
vocabulary, distillation, the official box coding in the losses), LVIS evaluation through
the Trainer as ``train_net.py`` runs them, demo/demo.py with custom words, the exported
TorchScript file against the eager model, and a vocabulary of another D refused.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog

from vild_d2.config import load_config
from vild_d2.data.region_store import ShardWriter, create_region_store, finalize_region_store
from vild_d2.engine import Trainer

from .conftest import ORACLE, ROOT, needs_shared
from .helpers.scripts import load_script

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


@pytest.fixture(scope="module")
def teacher_512(tmp_path_factory):
    """A tiny random CLIP with the released models' D = 512, saved as a CLIP checkpoint."""
    from vild_d2.teacher import build_clip, save_clip_checkpoint

    from .conftest import TINY_CLIP_SHAPE

    path = str(tmp_path_factory.mktemp("clip512") / "clip512.pt")
    save_clip_checkpoint(build_clip(seed=0, **dict(TINY_CLIP_SHAPE, embed_dim=D)), path)
    return path


# the oracle's runtime settings, and no dataset (its 20 classes are not LVIS's)
ORACLE_OPTS = [
    "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
    "MODEL.FPN.SIZE_DIVISIBILITY", "256", "INPUT.MIN_SIZE_TEST", "256",
    "INPUT.MAX_SIZE_TEST", "256", "TEST.DETECTIONS_PER_IMAGE", "20",
]  # fmt: skip


def _demo(args, capsys):
    code = load_script("demo/demo.py").main(args)
    return code, capsys.readouterr().err


def test_demo_cli_with_custom_words_and_the_exported_model(
    converted_oracle, teacher_512, tmp_path, capsys
):
    config = os.path.join(converted_oracle, "config.yaml")
    images = [os.path.join(ORACLE, "synthetic.png")]
    eager, exported = tmp_path / "eager", tmp_path / "exported"
    common = ["--input", *images, "--confidence-threshold", "0.0"]
    code, err = _demo(
        ["--config-file", config, "--output", str(eager), *common,
         "--custom-vocabulary", "cat,hat,red car", "--teacher", teacher_512,
         "--opts", *ORACLE_OPTS],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    results = json.load(open(eager / "results.json"))
    assert len(results) == 20 and {r["category_name"] for r in results} <= {"cat", "hat", "red car"}
    assert os.path.isfile(eager / "synthetic.png")

    export = load_script("tools/export_model.py")
    assert (
        export.main(["--config-file", config, "--output", str(tmp_path / "ts"), *ORACLE_OPTS]) == 0
    )
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(20)))
    vocabulary = ["--vocabulary-file", os.path.join(converted_oracle, "class_embeddings.npy")]
    vocabulary += ["--vocabulary-names", str(names)]
    code, err = _demo(
        [
            "--torchscript",
            str(tmp_path / "ts" / "model.ts"),
            "--output",
            str(exported),
            *common,
            *vocabulary,
        ],
        capsys,
    )
    assert code == 0, err
    code, err = _demo(
        ["--config-file", config, "--output", str(tmp_path / "eager2"), *common, *vocabulary,
         "--opts", *ORACLE_OPTS],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    ours = json.load(open(exported / "results.json"))
    theirs = json.load(open(tmp_path / "eager2" / "results.json"))
    assert [r["category_id"] for r in ours] == [r["category_id"] for r in theirs]
    assert np.allclose([r["bbox"] for r in ours], [r["bbox"] for r in theirs], atol=0.01)


def test_demo_cli_refuses_a_vocabulary_of_another_dimension(converted_oracle, tmp_path, capsys):
    wrong = tmp_path / "clip_rn50.npy"
    np.save(wrong, np.ones((3, 1024), dtype=np.float32))
    (tmp_path / "names.txt").write_text("cat\nhat\ncar\n")
    code, err = _demo(
        ["--config-file", os.path.join(converted_oracle, "config.yaml"), "--output",
         str(tmp_path / "out"), "--input", os.path.join(ORACLE, "synthetic.png"),
         "--vocabulary-file", str(wrong), "--vocabulary-names", str(tmp_path / "names.txt"),
         "--opts", *ORACLE_OPTS],
        capsys,
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "clip_rn50.npy" in err and "1024" in err and "D = 512" in err
    assert not (tmp_path / "out").exists()


def test_weights_that_leave_parameters_unset_are_refused_in_one_line(
    converted_oracle, tmp_path, capsys
):
    # a ResNet-101 config given the converted ResNet-50 weights: res4 has 17 blocks more
    config = os.path.join(converted_oracle, "config.yaml")
    deeper = [*ORACLE_OPTS, "MODEL.RESNETS.DEPTH", "101"]
    code, err = _demo(
        ["--config-file", config, "--output", str(tmp_path / "out"), "--input",
         os.path.join(ORACLE, "synthetic.png"), "--opts", *deeper],
        capsys,
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "parameters of the model are not in it" in err and "res4.6" in err
    export = load_script("tools/export_model.py")
    assert export.main(["--config-file", config, "--output", str(tmp_path / "ts"), *deeper]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "res4.6" in err
    assert not (tmp_path / "ts").exists()
    evaluation = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--eval-only", "--config-file",
         config, "OUTPUT_DIR", str(tmp_path / "eval"), *deeper],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluation.returncode == 2, evaluation.stderr[-2000:]
    assert "train_net.py: error: MODEL.WEIGHTS" in evaluation.stderr
    assert "res4.6" in evaluation.stderr and "Traceback" not in evaluation.stderr


def test_the_converted_config_runs_on_the_machine_that_converted_it(
    converted_oracle, tmp_path, capsys, monkeypatch
):
    cfg = load_config(os.path.join(converted_oracle, "config.yaml"))
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")
    # a config that names CUDA on a machine without it: one line, no CUDA traceback
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    export = load_script("tools/export_model.py")
    opts = [*ORACLE_OPTS, "MODEL.DEVICE", "cuda"]
    config = os.path.join(converted_oracle, "config.yaml")
    assert export.main(["--config-file", config, "--output", str(tmp_path / "ts"), *opts]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "MODEL.DEVICE cpu" in err
