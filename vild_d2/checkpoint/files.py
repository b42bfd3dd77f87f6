"""
Checks that a checkpoint file can be read, before any worker starts: ``MODEL.WEIGHTS``,
the one ``--resume`` would continue from, and a finished pipeline stage's output.
"""

import os
import pickle
import zipfile

import torch
from detectron2.config import CfgNode as CN

from ..config import ConfigError

__all__ = ["checkpoint_problem", "check_weights", "check_resume"]


def checkpoint_problem(path: str) -> str:
    """
    Why ``path`` is not a readable checkpoint ("" if it is): torch.save's zip format has
    every member's CRC checked, detectron2's model-zoo pickles are unpickled, other files
    loaded with torch.load. For a one-line error before any worker starts.
    """
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: every member's CRC is checked
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} is corrupt")
        elif path.endswith(".pkl"):  # detectron2's model-zoo pickles
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
        else:
            torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # zipfile, pickle and torch raise many kinds; say which file and what
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"is not a readable checkpoint (truncated or garbage?): {type(e).__name__}: {first}"
    return ""


def check_weights(cfg: CN) -> None:
    """
    Raise ConfigError if ``MODEL.WEIGHTS`` names a local file that is missing or not a
    readable checkpoint (truncated, garbage): before any worker starts, not in a traceback.
    URLs and detectron2's ``detectron2://``/``catalog://`` names are left to the checkpointer.
    """
    path = cfg.MODEL.WEIGHTS
    if not path or "://" in path:
        return
    if not os.path.isfile(path):
        raise ConfigError(f"MODEL.WEIGHTS: checkpoint not found: {path}")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"MODEL.WEIGHTS: {path} {problem}")


def check_resume(output_dir: str) -> None:
    """
    ``--resume`` continues from the checkpoint that ``OUTPUT_DIR/last_checkpoint`` names:
    raise ConfigError if that name is empty, names no file, or a file that is not a
    readable checkpoint (detectron2 would stop in a traceback, or start again from scratch).
    """
    marker = os.path.join(output_dir, "last_checkpoint")
    if not os.path.isfile(marker):
        return  # nothing to resume: detectron2 starts from MODEL.WEIGHTS, as it says
    with open(marker, encoding="utf-8", errors="replace") as f:
        name = f.read().strip()
    path = os.path.join(output_dir, name)
    remedy = (
        f"write the name of an intact model_*.pth of {output_dir} into {marker}, or delete"
        " last_checkpoint to start from MODEL.WEIGHTS"
    )
    if not name or not os.path.isfile(path):
        raise ConfigError(f"--resume: {marker} names '{name}', which is not a file; {remedy}")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"--resume: {path} (named by {marker}) {problem}; {remedy}")
