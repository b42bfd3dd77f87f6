"""
Kills and races, with real processes and signals: a killed pipeline
leaves no stage running, two jobs never share an output folder, a killed training
resumes from its last periodic checkpoint.
"""

import os
import signal
import subprocess
import sys
import time

from .conftest import ROOT, TINY_CONFIG


def _processes_mentioning(text: str):
    """pids of live processes whose command line contains ``text``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(pid))
    return found


def _tail(path, chars=3000) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def _start_logged(cmd, log, **popen_kwargs) -> subprocess.Popen:
    """``cmd`` in the background from ROOT, its stdout and stderr appended to the file ``log``."""
    with open(log, "a") as sink:  # the child keeps its own copy of the file
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, **popen_kwargs
        )


def _wait_for(predicate, timeout: float, what: str, proc=None, log=None):
    """Poll ``predicate`` until it holds; fail at once if ``proc`` exits first, with ``log``'s tail.

    Background processes write to a file (``log``), never to a pipe nobody reads: a full pipe
    would block the child and look like a slow one.
    """
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            tail = _tail(log) if log else ""
            raise AssertionError(f"exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{_tail(log)}" if log else ""))


def test_killed_pipeline_stops_its_stage_and_a_second_pipeline_is_refused(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "run_world_pipeline.py"),
        "--quick",
        "--device",
        "cpu",
        "--output",
        str(out),
    ]
    first = _start_logged(cmd, tmp_path / "pipeline.out")
    try:
        # a stage at work: a process other than the pipeline with OUTPUT in its command line
        def stage():
            return [pid for pid in _processes_mentioning(str(out)) if pid != first.pid]

        _wait_for(stage, 300, "a stage", first, tmp_path / "pipeline.out")
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and "is in use by pid" in second.stderr, second.stderr[-2000:]
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if first.poll() is None:
            first.kill()
    assert "stopped by signal" in (tmp_path / "pipeline.out").read_text()
    assert _processes_mentioning(str(out)) == []  # nothing left to race a re-run


def _train(out, datasets_root, log, *extra):
    """train_net.py in the background, its output in the file ``log`` (opened for appending)."""
    return _start_logged(
        [
            sys.executable,
            os.path.join(ROOT, "train_net.py"),
            "--resume",
            "--config-file",
            TINY_CONFIG,
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TRAIN",
            "('shapes_world_train',)",
            "DATASETS.TEST",
            "()",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "24",
            "SOLVER.CHECKPOINT_PERIOD",
            "5",
            "SOLVER.CHECKPOINTS_KEPT",
            "1",
            "DATALOADER.NUM_WORKERS",
            "1",
            "OUTPUT_DIR",
            str(out),
            *extra,
        ],
        log,
        env=dict(os.environ, DETECTRON2_DATASETS=str(datasets_root)),
        start_new_session=True,
    )


def test_killed_training_resumes_and_a_second_trainer_is_refused(tmp_path):
    from vild_d2.world.spec import ShapesWorldSpec
    from vild_d2.world.splits import generate_shapes_world

    generate_shapes_world(
        str(tmp_path / "data" / "shapes_world"),
        ShapesWorldSpec(seed=3, num_train=6, num_val=2, image_size=96, object_size=(12, 28)),
    )
    out = tmp_path / "train"
    logs = {name: tmp_path / f"{name}.out" for name in ("first", "second", "again")}
    # the first trainer has far more iterations than it gets: however slow the machine, it is
    # killed mid-training, not after it finished
    first = _train(out, tmp_path / "data", logs["first"], "SOLVER.MAX_ITER", "100000")
    try:

        def saved():
            last = out / "last_checkpoint"
            return last.is_file() and last.read_text().strip() not in ("", "model_0000004.pth")

        _wait_for(saved, 300, "a second periodic checkpoint", first, logs["first"])
        second = _train(out, tmp_path / "data", logs["second"])
        second.wait(timeout=120)
        text = logs["second"].read_text()
        assert (
            second.returncode == 2 and "train_net.py: error:" in text and "is in use by pid" in text
        ), text[-2000:]
        os.killpg(first.pid, signal.SIGKILL)  # as hard as a kill gets
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    periodic = sorted(f for f in os.listdir(out) if f.startswith("model_0") and f.endswith(".pth"))
    assert len(periodic) == 1  # CHECKPOINTS_KEPT 1: older periodic checkpoints were deleted
    resumed_from = int(periodic[0][len("model_") : -len(".pth")]) + 1
    # the killed trainer's lock is free; a few more iterations finish the training
    again = _train(out, tmp_path / "data", logs["again"], "SOLVER.MAX_ITER", str(resumed_from + 4))
    again.wait(timeout=600)
    text = logs["again"].read_text()
    assert again.returncode == 0, text[-3000:]
    log = (out / "log.txt").read_text()
    assert f"Starting training from iteration {resumed_from}" in log
    assert (out / "model_final.pth").is_file()
