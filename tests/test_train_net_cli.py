"""train_net.py fails on user mistakes with one clear line naming the culprit."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT, TINY_CONFIG
from .helpers.scripts import load_script


def _run(*args):
    """
    ``train_net.py ARGS`` in this process (every case fails at start-up, before a worker
    is launched; a subprocess per case cost 10 s of imports): (exit code, stderr lines).
    """
    train_net = load_script("train_net.py")
    argv, cwd, err = sys.argv, os.getcwd(), io.StringIO()
    sys.argv = ["train_net.py", *args]
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            train_net.invoke_main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--config-file", "configs/nope.yaml"], "config file not found: configs/nope.yaml"),
        (
            ["--config-file", TINY_CONFIG, "MODEL.NOT_A_KEY", "1"],
            "command-line override: unknown config key MODEL.NOT_A_KEY",
        ),
        (
            ["--config-file", TINY_CONFIG, "DATASETS.TRAIN", "('no_such_dataset',)"],
            "DATASETS.TRAIN names dataset 'no_such_dataset', which is not registered",
        ),
        (
            [
                "--config-file",
                "configs/shapes_world/vild_R_18_FPN_tiny.yaml",
                "DATASETS.REGION_STORE_TRAIN",
                "",
            ],
            (
                "DATASETS.REGION_STORE_TRAIN is empty: MODEL.VILD.IMAGE_LOSS_WEIGHT > 0 (ViLD"
                " distillation) needs distillation regions"
            ),
        ),
        (
            ["--config-file", TINY_CONFIG, "DATASETS.REGION_STORE_TRAIN", "/nonexistent/store"],
            "DATASETS.REGION_STORE_TRAIN: region store /nonexistent/store: no manifest.json",
        ),
    ],
    ids=[
        "missing-config",
        "unknown-key-override",
        "unregistered-dataset",
        "vild-without-store",
        "store-not-there",
    ],
)
def test_one_line_errors(args, expected):
    code, lines = _run(*args)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("train_net.py: error: ") and expected in lines[0]


def test_unknown_key_in_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSE: 3\n')
    code, lines = _run("--config-file", str(bad))
    assert code == 2 and len(lines) == 1, lines
    assert f"{bad}: unknown config key MODEL.ROI_HEADS.NUM_CLASSE" in lines[0]


def test_unreadable_yaml(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("MODEL:\n  ROI_HEADS: [unclosed\n    NUM_CLASSES: 3\n")
    code, lines = _run("--config-file", str(bad))
    assert code == 2 and len(lines) == 1, lines
    assert f"{bad}: not readable YAML (line" in lines[0]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    code, lines = _run("--config-file", str(binary))
    assert code == 2 and len(lines) == 1 and str(binary) in lines[0], lines


@pytest.mark.parametrize("case", ["missing", "truncated", "garbage"])
def test_bad_model_weights_is_one_line(case, tmp_path):
    import torch

    path = tmp_path / f"{case}.pth"
    if case != "missing":
        torch.save({"model": {"w": torch.randn(1000, 100)}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if case == "truncated" else b"garbage" * 100)
    code, lines = _run("--config-file", TINY_CONFIG, "--eval-only", "MODEL.WEIGHTS", str(path))
    expected = "checkpoint not found" if case == "missing" else "is not a readable checkpoint"
    assert code == 2 and len(lines) == 1, lines
    assert (
        lines[0].startswith("train_net.py: error: MODEL.WEIGHTS: ")
        and expected in lines[0]
        and str(path) in lines[0]
    )
    assert "weights_only" not in lines[0]


@pytest.mark.parametrize("case", ["truncated", "empty name", "missing file"])
def test_resume_from_a_broken_last_checkpoint_is_one_line(case, tmp_path):
    """Found by trying: detectron2 stopped in a traceback (or found no checkpoint at all)."""
    import torch

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {"w": torch.randn(1000, 100)}, "iteration": 99}, out / "model_0000099.pth")
    data = (out / "model_0000099.pth").read_bytes()
    if case == "truncated":
        (out / "model_0000099.pth").write_bytes(data[: len(data) // 2])
    name = {"truncated": "model_0000099.pth", "empty name": "", "missing file": "model_0000199.pth"}
    (out / "last_checkpoint").write_text(name[case])
    code, lines = _run(
        "--config-file", TINY_CONFIG, "--resume", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out)
    )
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("train_net.py: error: --resume: ")
    expected = {
        "truncated": f"{out / 'model_0000099.pth'} (named by {out / 'last_checkpoint'}) is not a"
        " readable checkpoint",
        "empty name": f"{out / 'last_checkpoint'} names '', which is not a file",
        "missing file": "names 'model_0000199.pth', which is not a file",
    }[case]
    assert expected in lines[0] and "delete last_checkpoint to start from MODEL.WEIGHTS" in lines[0]


def test_a_truncated_region_store_shard_is_one_line_before_training(tmp_path):
    """Found by trying: the shard's truncation was found by a data-loader worker, mid-run."""
    import numpy as np

    from vild_d2.data.region_store import ShardWriter, create_region_store, finalize_region_store

    store = tmp_path / "store"
    create_region_store(str(store), teacher="random", embed_dim=32)
    with ShardWriter(str(store), 0) as writer:
        for image_id in range(1, 4):
            boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
            writer.add(image_id, boxes, np.eye(2, 32), (64, 64))
    finalize_region_store(str(store))
    shard = [p for p in store.rglob("*") if p.is_file() and "embeddings" in p.name][0]
    shard.write_bytes(shard.read_bytes()[:-10])
    code, lines = _run(
        "--config-file", "configs/shapes_world/vild_R_18_FPN_tiny.yaml",
        "DATASETS.REGION_STORE_TRAIN", str(store), "MODEL.VILD.EMBED_DIM", "32",
    )  # fmt: skip
    assert code == 2 and len(lines) == 1, lines
    assert "DATASETS.REGION_STORE_TRAIN: region store" in lines[0]
    assert f"{shard.name} has" in lines[0] and "truncated" in lines[0]


def test_a_training_vocabulary_of_other_rows_is_one_line_at_start_up(tmp_path):
    """It was a 79-line traceback from inside the model's construction."""
    import numpy as np

    few = tmp_path / "few.npy"
    np.save(few, np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32))
    config = "configs/shapes_world/vild_text_R_18_FPN_tiny.yaml"
    code, lines = _run("--config-file", config, "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", str(few))
    assert code == 2 and len(lines) == 1, lines
    assert f"{few} (MODEL.VILD.TRAIN_TEXT_EMBEDDINGS): 5 rows" in lines[0]
    assert "MODEL.ROI_HEADS.NUM_CLASSES has 48 classes" in lines[0]


# train_net.py with one more dataset registered (named in VILD_D2_TEST_DATASET) first
REGISTER_AND_TRAIN = """
import json, os, runpy, sys
import vild_d2
from vild_d2.data.datasets import register_lvis_format
name, json_file, root = json.loads(os.environ["VILD_D2_TEST_DATASET"])
register_lvis_format(name, json_file, root, novel_frequencies=("r",))
sys.argv = ["train_net.py"] + sys.argv[1:]
runpy.run_path("train_net.py", run_name="__main__")
"""


def test_vild_on_a_dataset_with_novel_annotations_is_one_line(tiny_lvis, tmp_path):
    """It stopped at iteration 0 with a 52-line traceback from the loss."""
    import numpy as np

    data = json.load(open(tiny_lvis["json"]["train"]))
    rare = next(c for c in data["categories"] if c["frequency"] == "r")
    data["annotations"][0]["category_id"] = rare["id"]  # one novel object, annotated
    path = tmp_path / "train_with_novel.json"
    path.write_text(json.dumps(data))
    name = "tiny_lvis_train_with_novel"
    vocab = tmp_path / "vocab.npy"
    np.save(vocab, np.random.default_rng(0).normal(size=(48, 64)).astype(np.float32))
    # in a process of its own: training's set-up adds detectron2's log handlers
    env = dict(os.environ, VILD_D2_TEST_DATASET=json.dumps([name, str(path), tiny_lvis["root"]]))
    proc = subprocess.run(
        [sys.executable, "-c", REGISTER_AND_TRAIN, "--config-file",
         "configs/shapes_world/vild_text_R_18_FPN_tiny.yaml",
         "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out"),
         "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()",
         "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", str(vocab), "DATALOADER.NUM_WORKERS", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    code, lines = proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "holds annotations of" in lines[0] and rare["name"] in lines[0]
    assert "use the open-vocabulary split with them removed" in lines[0]
