"""
train_net.py on several CPU processes (gloo): a tiny ViLD with
distillation trains on 2 workers like on 1 (same total batch), distributed evaluation
equals one-process evaluation (LVIS and proposal recall), a killed worker ends the run
with a clear error, and --resume continues.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT, TINY_CLIP_SHAPE
from .test_kill_and_lock import _start_logged, _wait_for

VILD = os.path.join(ROOT, "configs", "shapes_world", "vild_R_18_FPN_tiny.yaml")
RPN = os.path.join(ROOT, "configs", "shapes_world", "rpn_R_18_FPN_tiny.yaml")
D = TINY_CLIP_SHAPE["embed_dim"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 16-image world, a random text vocabulary and a region store (M = 8) from a tiny teacher."""
    from vild_d2.teacher import build_clip, save_clip_checkpoint
    from vild_d2.world.spec import ShapesWorldSpec
    from vild_d2.world.splits import generate_shapes_world

    root = tmp_path_factory.mktemp("dist")
    generate_shapes_world(
        str(root / "data" / "shapes_world"),
        ShapesWorldSpec(seed=5, num_train=16, num_val=4, image_size=96, object_size=(12, 28)),
    )
    save_clip_checkpoint(build_clip(seed=0, **TINY_CLIP_SHAPE), str(root / "clip.pt"))
    np.save(root / "text.npy", np.random.default_rng(0).normal(size=(48, D)).astype(np.float32))
    env = dict(os.environ, DETECTRON2_DATASETS=str(root / "data"))
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "precompute_region_embeddings.py"),
            "--teacher",
            str(root / "clip.pt"),
            "--dataset",
            "shapes_world_train_ov",
            "--config-file",
            RPN,
            "--allow-untrained-rpn",
            "--output",
            str(root / "store"),
            "--num-regions",
            "8",
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"root": root, "env": env}


def _train_net(world, workers, out, *opts, config=VILD, log=None, flags=()):
    """train_net.py on ``workers`` CPU processes; with ``log`` (a path) in the background."""
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_net.py"),
        *flags,
        "--num-gpus",
        str(workers),
        "--config-file",
        config,
        "MODEL.DEVICE",
        "cpu",
        "DATALOADER.NUM_WORKERS",
        "0",
        "INPUT.RANDOM_FLIP",
        "none",
        "SEED",
        "7",
        "OUTPUT_DIR",
        str(out),
        *opts,
    ]
    if config == VILD:
        cmd += [
            "MODEL.VILD.EMBED_DIM",
            str(D),
            "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
            str(world["root"] / "text.npy"),
            "MODEL.VILD.NUM_DISTILL_REGIONS",
            "8",
            "DATASETS.REGION_STORE_TRAIN",
            str(world["root"] / "store"),
        ]
    if log is not None:
        return _start_logged(cmd, log, env=world["env"])
    proc = subprocess.run(
        cmd, cwd=ROOT, env=world["env"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


TRAIN = [
    "DATASETS.TEST",
    "()",
    "SOLVER.IMS_PER_BATCH",
    "4",
    "SOLVER.MAX_ITER",
    "10",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.STEPS",
    "(100,)",
]


def _last_losses(out):
    rows = [json.loads(line) for line in open(out / "metrics.json") if "total_loss" in line]
    return rows[-1]


@pytest.fixture(scope="module")
def one_worker(world, tmp_path_factory):
    """The output folder of TRAIN on one process (the reference of both tests below)."""
    out = tmp_path_factory.mktemp("one_worker")
    _train_net(world, 1, out, *TRAIN)
    return out


def test_two_cpu_workers_train_like_one(world, one_worker, tmp_path):
    two = _train_net(world, 2, tmp_path / "two", *TRAIN)
    assert "World size: 2" in two.stdout + two.stderr
    assert (tmp_path / "two" / "model_final.pth").is_file()
    one, two = _last_losses(one_worker), _last_losses(tmp_path / "two")
    # Same initial weights (SEED; DDP broadcasts rank 0's), same images per iteration (the
    # sampler shards one shuffled order by rank); the RoI sampling draws from other random
    # streams, so the medians of the 10 losses agree only up to that noise.
    assert one["iteration"] == two["iteration"] == 9
    assert abs(two["loss_image"] - one["loss_image"]) <= 0.05 * one["loss_image"], (one, two)
    assert abs(two["total_loss"] - one["total_loss"]) <= 0.15 * one["total_loss"], (one, two)


@pytest.mark.parametrize("config", [VILD, RPN], ids=["lvis", "proposal_recall"])
def test_distributed_evaluation_equals_one_process(world, one_worker, tmp_path, config):
    if config == VILD:
        weights = ["MODEL.WEIGHTS", str(one_worker / "model_final.pth")]
    else:  # random RPN weights, saved: each rank must load the same ones
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model

        from vild_d2.config import load_config

        model = build_model(
            load_config(RPN, ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
        )
        DetectionCheckpointer(model, save_dir=str(tmp_path)).save("rpn")
        weights = ["MODEL.WEIGHTS", str(tmp_path / "rpn.pth")]
    results = []
    for workers in (1, 2):
        out = tmp_path / f"eval{workers}"
        _train_net(
            world,
            workers,
            out,
            "DATASETS.TEST",
            "('shapes_world_val',)",
            *weights,
            config=config,
            flags=["--eval-only"],
        )
        results.append(json.loads((out / "eval_results.json").read_text()))
    assert results[0].keys() == results[1].keys() and len(results[0]) > 4
    for key, value in results[0].items():
        assert value == pytest.approx(results[1][key], abs=1e-6, nan_ok=True), key


def _children(pid):
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(p))
            except OSError:
                pass
    return found


def test_a_killed_worker_stops_the_run_and_resume_continues(world, tmp_path):
    out = tmp_path / "run"
    opts = [
        *TRAIN[:-6],
        "SOLVER.MAX_ITER",
        "24",
        "SOLVER.WARMUP_ITERS",
        "2",
        "SOLVER.STEPS",
        "(100,)",
        "SOLVER.CHECKPOINT_PERIOD",
        "4",
    ]
    log = tmp_path / "run.out"
    proc = _train_net(world, 2, out, *opts, log=log)
    try:
        _wait_for(
            lambda: (out / "last_checkpoint").is_file(), 300, "the first checkpoint", proc, log
        )
        workers = [
            c
            for c in _children(proc.pid)
            if "spawn" in open(f"/proc/{c}/cmdline", "rb").read().decode(errors="replace")
        ]
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    text = log.read_text()
    line = [x for x in text.splitlines() if x.startswith("train_net.py: error:")]
    assert line and "worker 1 of 2 died" in line[-1] and "--resume" in line[-1], text[-2000:]
    resumed_from = (
        int((out / "last_checkpoint").read_text().strip()[len("model_") : -len(".pth")]) + 1
    )
    _train_net(world, 2, out, *opts, flags=["--resume"])
    assert f"Starting training from iteration {resumed_from}" in (out / "log.txt").read_text()
    assert (out / "model_final.pth").is_file()
