"""detectron2's import-time jit deprecation warnings: silenced in each entry point, only they."""

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

ENTRY_POINTS = [
    "train_net.py",
    "tools/precompute_region_embeddings.py",
    "tools/precompute_text_embeddings.py",
    "tools/region_store.py",
    "tools/train_world_teacher.py",
    "tools/pretrain_world_detector.py",
    "tools/run_world_pipeline.py",
    "datasets/prepare_shapes_world.py",
    "tools/export_model.py",
    "demo/demo.py",
]


@pytest.fixture(scope="module")
def helps(tmp_path_factory):
    """Every entry point's ``--help``, all started at once: (exit code, stderr) by script."""
    folder = tmp_path_factory.mktemp("helps")
    running = {}
    for i, script in enumerate(ENTRY_POINTS):
        err = open(folder / f"{i}.err", "w+")  # a file: nobody reads a pipe while they run
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, script), "--help"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        running[script] = (proc, err)
    done = {}
    for script, (proc, err) in running.items():
        code = proc.wait(timeout=300)
        err.seek(0)
        done[script] = (code, err.read())
        err.close()
    return done


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_help_has_no_jit_deprecation_noise(helps, script):
    code, stderr = helps[script]
    assert code == 0, stderr[-2000:]
    assert "torch.jit.script" not in stderr, stderr[-2000:]


def test_a_users_own_jit_script_still_warns(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(
        "import warnings\nimport vild_d2\nimport torch\n"
        "def f(x: torch.Tensor) -> torch.Tensor:\n    return x + 1\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n    torch.jit.script(f)\n"
        "print(sum('torch.jit.script' in str(x.message) for x in w))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(user)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip().splitlines()[-1]) >= 1
