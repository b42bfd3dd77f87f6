"""
Readers of what the pipeline's stages leave behind: detectron2's metrics.json and
eval_results.json, the world's and the pretraining's records, and the check that a
finished stage's output can be read back before the stage is skipped.
"""

import json
import os
from dataclasses import asdict
from typing import List

import numpy as np

from vild_d2.checkpoint.files import checkpoint_problem
from vild_d2.engine import EVAL_RESULTS_FILE
from vild_d2.errors import VildD2Error
from vild_d2.world.spec import spec_from_json

__all__ = [
    "PipelineError",
    "EVAL_RESULTS_FILE",
    "metrics_rows",
    "last_evaluation",
    "final_evaluation",
    "eval_results",
    "trained",
    "loss_flatness",
    "unreadable",
    "world_matches",
    "recipe_matches",
    "num_images",
    "categories",
    "fingerprint",
]


class PipelineError(VildD2Error):
    """The pipeline cannot go on: a stage's output is unusable or from another recipe."""


def metrics_rows(output_dir: str) -> List[dict]:
    """The rows of OUTPUT_DIR/metrics.json (detectron2's JSONWriter), [] if none."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def last_evaluation(output_dir: str, key: str) -> dict:
    """The last row of OUTPUT_DIR/metrics.json that holds ``key`` ({} if none)."""
    rows = [r for r in metrics_rows(output_dir) if key in r]
    return rows[-1] if rows else {}


def eval_results(output_dir: str) -> dict:
    """OUTPUT_DIR/eval_results.json of ``train_net.py --eval-only`` ({} if none)."""
    path = os.path.join(output_dir, EVAL_RESULTS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def final_evaluation(output_dir: str, key: str) -> dict:
    """
    A training's final evaluation holding ``key``: the last such row of metrics.json
    (train_net.py) or else eval_results.json (tools/train_heads_on_cached_features.py);
    {} if none.
    """
    found = last_evaluation(output_dir, key)
    if found:
        return found
    results = eval_results(output_dir)
    return results if key in results else {}


def trained(output_dir: str, key: str) -> bool:
    """A training that finished: its model_final.pth and a final evaluation holding ``key``."""
    return os.path.isfile(os.path.join(output_dir, "model_final.pth")) and bool(
        final_evaluation(output_dir, key)
    )


def loss_flatness(output_dir: str, key: str = "total_loss") -> dict:
    """
    The training loss over the last fifth of the iterations: its mean over the first and
    the second half of that fifth, and their relative change (flat: a few % at most).
    For heads trained on cached features (OUTPUT_DIR/head_training.json): the summed
    losses of the last two epochs.
    """
    epochs = _head_training_epochs(output_dir)
    if epochs:
        if len(epochs) < 2:
            return {}
        a, b = (sum(e.values()) for e in epochs[-2:])
        return {"first": a, "second": b, "change": (b - a) / a if a else float("nan")}
    rows = [
        (r["iteration"], r[key]) for r in metrics_rows(output_dir) if key in r and "iteration" in r
    ]
    if len(rows) < 4:
        return {}
    last = rows[-1][0]
    tail = [(i, v) for i, v in rows if i >= 0.8 * last]
    mid = tail[0][0] + (last - tail[0][0]) / 2
    first = [v for i, v in tail if i < mid] or [tail[0][1]]
    second = [v for i, v in tail if i >= mid]
    a, b = sum(first) / len(first), sum(second) / len(second)
    return {"first": a, "second": b, "change": (b - a) / a if a else float("nan")}


def _head_training_epochs(output_dir: str) -> List[dict]:
    path = os.path.join(output_dir, "head_training.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)


def unreadable(path: str) -> str:
    """Why a finished stage's output file cannot be used ("" if it can; folders pass)."""
    if path.endswith((".pth", ".pt")):
        return checkpoint_problem(path)
    try:
        if path.endswith(".npy"):
            np.load(path, allow_pickle=False)
        elif path.endswith(".json"):
            with open(path) as f:
                json.load(f)
    except (OSError, ValueError, EOFError) as e:
        return f"is not readable (truncated or garbage?): {type(e).__name__}"
    return ""


def world_matches(data_root: str, spec) -> bool:
    """True if the world exists with ``spec``; PipelineError if it exists with another."""
    train_json = os.path.join(data_root, "annotations", "train.json")
    if not os.path.isfile(os.path.join(data_root, "annotations", "val.json")):
        return False
    found, wanted = asdict(spec_from_json(train_json)), asdict(spec)
    if found != wanted:
        diff = {k: (v, wanted[k]) for k, v in found.items() if wanted.get(k) != v}
        raise PipelineError(
            f"{data_root} holds another shapes world (found vs wanted: {diff}). Delete the folder "
            "(it is regenerated, with its teacher) or point DETECTRON2_DATASETS elsewhere."
        )
    return True


def recipe_matches(checkpoint: str, wanted: dict, output: str, missing: dict = None) -> bool:
    """
    True if ``checkpoint`` exists and its .json record holds ``wanted`` (argument -> value;
    ``missing``: the value of an argument that older records lack); PipelineError if it
    exists with others: everything in ``output`` follows from it.
    """
    record = os.path.splitext(checkpoint)[0] + ".json"
    if not (os.path.isfile(checkpoint) and os.path.isfile(record)):
        return False
    with open(record) as f:
        found = json.load(f)
    recorded = {k: found.get(k, (missing or {}).get(k)) for k in wanted}
    differ = [k for k, v in wanted.items() if recorded[k] != v]
    if differ:
        inside = os.path.abspath(checkpoint).startswith(os.path.abspath(output) + os.sep)
        folders = output if inside else f"{os.path.dirname(checkpoint)} and {output}"
        made, want = (
            " ".join(f"--{k.replace('_', '-')} {values[k]}" for k in differ)
            for values in (recorded, wanted)
        )
        raise PipelineError(
            f"{checkpoint} was made with {made}, this run wants {want}. Delete {folders}"
            " (everything there follows from it) to make it again."
        )
    return True


def num_images(json_file: str) -> int:
    """Images of an annotation json (-1 if it does not exist)."""
    if not os.path.isfile(json_file):
        return -1
    with open(json_file) as f:
        return len(json.load(f)["images"])


def categories(json_file: str) -> list:
    """The "categories" of an annotation json."""
    with open(json_file) as f:
        return json.load(f)["categories"]


def fingerprint(paths, root: str) -> list:
    """[path relative to ``root``, size, mtime] of each existing file: a cache's key."""
    return [
        [os.path.relpath(p, root), os.path.getsize(p), int(os.path.getmtime(p))]
        for p in paths
        if os.path.isfile(p)
    ]
