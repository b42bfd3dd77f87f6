"""
A full disk reads as a full disk, in one line, with nothing left behind: the converter and
demo/demo.py writing into a 2 MiB tmpfs (mounted here; the test needs root, as CI is).
"""

import os
import subprocess
import sys

import pytest

from .conftest import ORACLE, ROOT, needs_shared


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _one_line(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    return proc.stderr


@needs_shared
def test_the_converter_on_a_full_disk(tiny_disk):
    tool = os.path.join(ROOT, "tools", "convert_official_checkpoint.py")
    out = tiny_disk / "converted"
    source = os.path.join(ORACLE, "model.ckpt")
    err = _one_line([sys.executable, tool, source, "--output", str(out), "--no-progress"])
    assert f"no space left on the device to write {out}" in err
    assert os.listdir(tiny_disk) == []


def test_demo_on_a_full_disk(tiny_disk, tiny_model_folder, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"  # its picture alone is larger than the disk
    Image.effect_noise((1600, 1200), 60).convert("RGB").save(photo)
    out = tiny_disk / "detections"
    demo = os.path.join(ROOT, "demo", "demo.py")
    cmd = [sys.executable, demo, "--model", tiny_model_folder["path"], "--input", str(photo)]
    err = _one_line(cmd + ["--output", str(out), "--custom-vocabulary", "a,b", "--device", "cpu"])
    assert f"no space left on the device to write {out}" in err
    assert os.listdir(tiny_disk) == []
