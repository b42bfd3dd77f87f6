"""
No noise: every entry point's ``--help`` and one-line error print nothing on stderr but
that line (detectron2's import-time jit warnings silenced, only they; clip imports without
pkg_resources).
"""

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
    "tools/convert_official_checkpoint.py",
    "demo/demo.py",
    "demo/app.py",
]
# a mistake a user makes in each tool people start by hand: (arguments, the script's error)
ONE_LINE_ERRORS = {
    "train_net.py": ["--config-file", "missing.yaml"],
    "demo/demo.py": ["--config-file", "missing.yaml", "--input", "missing.jpg", "--output", "o"],
    "tools/convert_official_checkpoint.py": ["missing.tar.gz", "--output", "o"],
    "tools/export_model.py": ["--config-file", "missing.yaml", "--output", "o"],
    "demo/app.py": ["--model", "missing_folder"],
}


def _run_all(folder, commands: dict) -> dict:
    """Each script with its arguments, all started at once: (exit code, stderr) by script."""
    running = {}
    for i, (script, args) in enumerate(commands.items()):
        err = open(folder / f"{i}.err", "w+")  # a file: nobody reads a pipe while they run
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, script), *args],
            cwd=folder,
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


@pytest.fixture(scope="module")
def helps(tmp_path_factory):
    return _run_all(tmp_path_factory.mktemp("helps"), {s: ["--help"] for s in ENTRY_POINTS})


@pytest.fixture(scope="module")
def errors(tmp_path_factory):
    return _run_all(tmp_path_factory.mktemp("errors"), ONE_LINE_ERRORS)


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_help_prints_nothing_on_stderr(helps, script):
    code, stderr = helps[script]
    assert code == 0, stderr[-2000:]
    assert stderr == "", stderr[-2000:]


@pytest.mark.parametrize("script", sorted(ONE_LINE_ERRORS))
def test_a_mistake_is_one_line_on_stderr(errors, script):
    code, stderr = errors[script]
    assert code == 2 and stderr.count("\n") == 1, stderr[-2000:]
    assert "missing" in stderr and "Warning" not in stderr


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
