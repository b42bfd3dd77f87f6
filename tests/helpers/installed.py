"""
vild_d2 installed the way a user without this checkout has it: a fresh virtual environment
outside the checkout with the package built and installed (not editable), and the
checkout's drivers (train_net.py, tools/, datasets/, configs/) copied without vild_d2/.
"""

import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# not copied: the environment, git, run outputs, caches, and the default world
NOT_COPIED = {".git", ".venv", ".build", "build", "output", "__pycache__", ".pytest_cache"}


def _not_copied(folder: str, names):
    world = os.path.join(ROOT, "datasets")
    return [
        n
        for n in names
        if n in NOT_COPIED
        or n.endswith(".egg-info")
        or (n == "shapes_world" and os.path.samefile(folder, world))
    ]


@dataclass
class Installed:
    python: str  # the fresh environment's interpreter
    drivers: str  # the checkout's copy without vild_d2/
    site_packages: str  # where vild_d2 was installed


def _run(cmd, **kwargs) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert (
        proc.returncode == 0
    ), f"{' '.join(map(str, cmd))}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def install_outside_checkout(folder: str) -> Installed:
    """
    ``folder``/venv: a venv that sees this environment's third-party packages (torch,
    detectron2, CLIP: a path line, so that no editable install of vild_d2 comes along) and
    holds vild_d2 built from a copy of the checkout; ``folder``/checkout: that copy, its
    vild_d2/ removed once installed.
    """
    venv, drivers = os.path.join(folder, "venv"), os.path.join(folder, "checkout")
    shutil.copytree(ROOT, drivers, ignore=_not_copied)
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = os.path.join(venv, "bin", "python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    purelib = purelib.strip()
    with open(os.path.join(purelib, "parent_environment.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q"]
    _run(pip + ["--no-index", "--target", purelib, drivers], cwd=folder)
    shutil.rmtree(os.path.join(drivers, "vild_d2"))
    return Installed(python, drivers, purelib)
