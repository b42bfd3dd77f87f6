#!/usr/bin/env python
"""
The main job: run vild_d2 end to end on the embedded shapes world, on this machine.

    python tools/run_demo.py            # ~4 min on 2 CPU cores
    python tools/run_demo.py --quick    # ~1 min: tiny data, a few iterations (a smoke test)

Stages, each a normal command you would also run on real data:
  1. data      datasets/prepare_shapes_world.py (skipped if the dataset exists)
  2. train     train_net.py --config-file configs/shapes_world/mask_rcnn_R_18_FPN_tiny.yaml
               (a stock Mask R-CNN trained from scratch; evaluated with LVISEvaluator)
  3. pictures  detections on validation images, written next to the results

Until the ViLD model and the offline CLIP teacher land, this trains the stock Mask R-CNN
that the ViLD models will be compared against.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "shapes_world", "mask_rcnn_R_18_FPN_tiny.yaml")


def _stage(name: str, cmd, env, log_path: str, show) -> None:
    """Run ``cmd``, keep its full output in ``log_path``, echo ``show(line)`` if not None."""
    print(f"\n== {name}: {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}",
          flush=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            shown = show(line)
            if shown is not None:
                print("   " + shown, flush=True)
        proc.wait()
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-20:])
        sys.exit(f"stage '{name}' failed (exit {proc.returncode}); end of {log_path}:\n{tail}")
    print(f"   done in {time.time() - t0:.0f}s (log: {os.path.relpath(log_path, ROOT)})")


def _training_progress(line: str):
    """detectron2's periodic 'eta: .. iter: N  total_loss: ..' line, shortened."""
    if " iter: " not in line or "total_loss" not in line:
        return None
    return line[line.index("eta:"):line.index("time:")].strip() if "eta:" in line else None


def _final_metrics(output_dir: str) -> dict:
    """The last evaluation that detectron2 wrote to OUTPUT_DIR/metrics.json."""
    last = {}
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            row = json.loads(line)
            if "bbox/AP" in row:
                last = row
    return last


def _table(rows) -> str:
    cols = ["AP", "APr", "APc", "APf"]
    head = f"| {'model':<28} | task | " + " | ".join(f"{c:>5}" for c in cols) + " |"
    lines = [head, "|" + "-" * 30 + "|------|" + "|".join(["-------"] * len(cols)) + "|"]
    for name, metrics in rows:
        for task in ("bbox", "segm"):
            vals = [metrics.get(f"{task}/{c}", float("nan")) for c in cols]
            lines.append(f"| {name:<28} | {task} | " + " | ".join(f"{v:5.1f}" for v in vals) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny data and a few iterations")
    p.add_argument("--output", default=None, help="output folder (default output/demo[_quick])")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = p.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = os.path.abspath(args.output or os.path.join(ROOT, "output", "demo_quick" if args.quick else "demo"))
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.quick:  # keep the quick world apart from the full one
        env["DETECTRON2_DATASETS"] = os.path.join(out, "datasets")
    data_root = os.path.join(env.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")), "shapes_world")
    py = sys.executable
    t0 = time.time()

    if not os.path.isfile(os.path.join(data_root, "annotations", "val.json")):
        size = ["--num-train", "8", "--num-val", "4"] if args.quick else []
        _stage("data", [py, os.path.join(ROOT, "datasets", "prepare_shapes_world.py"),
                        "--root", data_root, *size],
               env, os.path.join(out, "data.log"), lambda l: l.rstrip())
    else:
        print(f"\n== data: {data_root} exists")

    train_dir = os.path.join(out, "mask_rcnn_R_18_FPN_tiny")
    opts = ["MODEL.DEVICE", device, "OUTPUT_DIR", train_dir]
    if args.quick:
        opts += ["SOLVER.MAX_ITER", "10", "SOLVER.WARMUP_ITERS", "5", "SOLVER.STEPS", "(8,)"]
    _stage("train", [py, os.path.join(ROOT, "train_net.py"), "--config-file", CONFIG, *opts],
           env, os.path.join(out, "train.log"), _training_progress)

    print("\n== pictures")
    os.environ["DETECTRON2_DATASETS"] = env.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))
    import vild_d2  # noqa: F401  (registers datasets, under the root chosen above)
    from vild_d2.config import load_config
    from vild_d2.utils.visualize import draw_detections

    cfg = load_config(CONFIG, opts + ["MODEL.WEIGHTS", os.path.join(train_dir, "model_final.pth")])
    picture = draw_detections(cfg, "shapes_world_val", os.path.join(out, "detections_val.png"))
    print(f"   {os.path.relpath(picture, ROOT)}")

    print(f"\n== results on shapes_world_val (LVIS AP, %), {time.time() - t0:.0f}s in all\n")
    print(_table([("Mask R-CNN R18-FPN (stock)", _final_metrics(train_dir))]))


if __name__ == "__main__":
    main()
