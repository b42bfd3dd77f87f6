#!/usr/bin/env python
"""
The main job: the whole ViLD pipeline on the embedded shapes world, on this machine.

    python tools/run_demo.py            # ~25 min on 2 CPU cores (measured 26 min with the install)
    python tools/run_demo.py --quick    # a few minutes: tiny world, a few iterations (a smoke test)

Stages, each a normal command you would also run on LVIS (printed as it starts; its
full output goes to OUTPUT/<stage>.log):
  1. data      datasets/prepare_shapes_world.py              (skipped if the world exists)
  2. teacher   tools/train_world_teacher.py: the world's CLIP (skipped if it exists)
  3. rpn       train_net.py, configs/shapes_world/rpn_R_18_FPN_tiny.yaml: class-agnostic
               RPN on the base categories; recall@300 on novel vs base val objects
  4. text      tools/precompute_text_embeddings.py: the 36 categories' embeddings
  5. regions   tools/precompute_region_embeddings.py: the RPN's top M proposals of every
               base-training image, embedded by the teacher
  6. models    train_net.py: ViLD-text, ViLD, ViLD-ensemble (on shapes_world_train_ov,
               rare = novel annotations removed) and the supervised Mask R-CNN (on
               shapes_world_train, all categories); each evaluated with LVISEvaluator
  7. pictures  OUTPUT/detections_val.png: the models on the same val images, novel
               categories in magenta
A stage whose result is complete is skipped, so a killed run resumes where it stopped
(delete OUTPUT to start over). Results: the table printed at the end and
OUTPUT/results.json.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "shapes_world")
RECALL_K = 300  # the RPN's recall is reported at its POST_NMS_TOPK_TEST (rpn_R_18_FPN_tiny.yaml)
RPN_DONE_KEY = f"proposals/AR@{RECALL_K}"  # in the RPN's metrics.json once it was evaluated


@dataclass
class DemoSize:
    """How big each stage is: the full run and the --quick one."""

    num_train: int  # shapes world training images
    num_val: int  # shapes world val images
    teacher_images: int  # the teacher's own rendered images
    teacher_steps: int  # the teacher's contrastive training steps
    rpn_iters: int  # iterations of the class-agnostic RPN
    detector_iters: int  # iterations of each of the four detectors
    num_regions: int  # M: distillation regions per training image


FULL = DemoSize(num_train=400, num_val=100, teacher_images=1500, teacher_steps=900,
                rpn_iters=300, detector_iters=300, num_regions=32)
QUICK = DemoSize(num_train=24, num_val=8, teacher_images=64, teacher_steps=10,
                 rpn_iters=10, detector_iters=10, num_regions=8)

# (output folder, config, title, training set) of the four compared detectors.
MODELS = [
    ("vild_text", "vild_text_R_18_FPN_tiny.yaml", "ViLD-text", "base"),
    ("vild", "vild_R_18_FPN_tiny.yaml", "ViLD", "base"),
    ("vild_ensemble", "vild_ensemble_R_18_FPN_tiny.yaml", "ViLD-ensemble", "base"),
    ("mask_rcnn_supervised", "mask_rcnn_R_18_FPN_tiny.yaml", "Mask R-CNN (supervised)", "base+novel"),
]


def _shown(cmd) -> str:
    return " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)


def _stage(name: str, cmd, env, log_path: str, show) -> float:
    """Run ``cmd``, keep its full output in ``log_path``, echo ``show(line)`` if not None."""
    print(f"\n== {name}: {_shown(cmd)}", flush=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            shown = show(line.split("\r")[-1])
            if shown is not None:
                print("   " + shown, flush=True)
        proc.wait()
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-20:])
        sys.exit(f"stage '{name}' failed (exit {proc.returncode}); end of {log_path}:\n{tail}")
    seconds = time.time() - t0
    print(f"   done in {seconds:.0f}s (log: {os.path.relpath(log_path, ROOT)})")
    return seconds


def _skip(name: str, what: str) -> float:
    print(f"\n== {name}: {what} exists, skipped")
    return 0.0


def _training_progress(line: str):
    """detectron2's periodic 'eta: .. iter: N  total_loss: ..' line, shortened."""
    if " iter: " not in line or "total_loss" not in line or "eta:" not in line:
        return None
    return line[line.index("eta:"):line.index("time:")].strip() if "time:" in line else None


def _lines_with(*words):
    def show(line: str):
        line = line.rstrip()
        return line if any(w in line for w in words) else None
    return show


def _last_evaluation(output_dir: str, key: str) -> dict:
    """The last row of OUTPUT_DIR/metrics.json that holds ``key`` ({} if none)."""
    path = os.path.join(output_dir, "metrics.json")
    last = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if key in row:
                    last = row
    return last


def _trained(output_dir: str, key: str) -> bool:
    return os.path.isfile(os.path.join(output_dir, "model_final.pth")) and bool(_last_evaluation(output_dir, key))


def _check_world(data_root: str, size: DemoSize) -> bool:
    """True if the world exists with the demo's size; exits if it exists with another."""
    from vild_d2.data.datasets.shapes_world import spec_from_json

    train_json = os.path.join(data_root, "annotations", "train.json")
    if not os.path.isfile(os.path.join(data_root, "annotations", "val.json")):
        return False
    spec = spec_from_json(train_json)
    if (spec.num_train, spec.num_val) != (size.num_train, size.num_val):
        sys.exit(f"{data_root} holds a shapes world of {spec.num_train} train / {spec.num_val} val "
                 f"images; this demo uses {size.num_train} / {size.num_val}. Delete the folder (it is "
                 "regenerated, with its teacher) or point DETECTRON2_DATASETS elsewhere.")
    return True


def _fmt(v) -> str:
    return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.1f}"


def results_table(results: dict) -> str:
    """Markdown table of the detectors' LVIS AP (%) and of the RPN and teacher diagnostics."""
    cols = ["AP", "APr", "APc", "APf"]
    lines = [
        "| model | trained on | " + " | ".join(f"box {c}" for c in cols) + " | "
        + " | ".join(f"mask {c}" for c in cols) + " |",
        "|---|---|" + "---:|" * (2 * len(cols)),
    ]
    for row in results["models"]:
        m = row["metrics"]
        vals = [m.get(f"bbox/{c}") for c in cols] + [m.get(f"segm/{c}") for c in cols]
        lines.append(f"| {row['title']} | {row['trained_on']} | " + " | ".join(_fmt(v) for v in vals) + " |")
    rpn, k = results["rpn"], results["rpn"]["k"]
    teacher = results["teacher"]
    lines += [
        "",
        "| diagnostic | all | novel | base |",
        "|---|---:|---:|---:|",
        f"| RPN recall@{k} (IoU 0.5), % | {_fmt(rpn.get(f'R50@{k}'))} | {_fmt(rpn.get(f'R50_novel@{k}'))} "
        f"| {_fmt(rpn.get(f'R50_base@{k}'))} |",
        f"| RPN AR@{k} (IoU 0.5:0.95), % | {_fmt(rpn.get(f'AR@{k}'))} | {_fmt(rpn.get(f'AR_novel@{k}'))} "
        f"| {_fmt(rpn.get(f'AR_base@{k}'))} |",
        f"| teacher zero-shot accuracy on val boxes, % | {_fmt(teacher.get('accuracy'))} "
        f"| {_fmt(teacher.get('accuracy_novel'))} | {_fmt(teacher.get('accuracy_base'))} |",
    ]
    return "\n".join(lines)


def target_lines(results: dict) -> str:
    """The paper's three claims, checked on the measured numbers (mask AP, as LVIS reports)."""
    m = {row["key"]: row["metrics"] for row in results["models"]}

    def ap(model, c):
        return m[model].get(f"segm/{c}", float("nan"))

    checks = [
        ("ViLD APr above ViLD-text APr", ap("vild", "APr"), ap("vild_text", "APr"), lambda a, b: a > b),
        ("ViLD-ensemble APr >= supervised APr", ap("vild_ensemble", "APr"), ap("mask_rcnn_supervised", "APr"),
         lambda a, b: a >= b),
        ("ViLD-ensemble APc/APf within 3 points of ViLD-text",
         (ap("vild_ensemble", "APc") + ap("vild_ensemble", "APf")) / 2,
         (ap("vild_text", "APc") + ap("vild_text", "APf")) / 2, lambda a, b: a >= b - 3),
    ]
    return "\n".join(f"  [{'met' if ok(a, b) else 'MISSED'}] {name}: {a:.1f} vs {b:.1f}"
                     for name, a, b, ok in checks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny world and a few iterations (a smoke test)")
    p.add_argument("--output", default=None, help="output folder (default output/demo[_quick])")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = p.parse_args()

    import torch

    size = QUICK if args.quick else FULL
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = os.path.abspath(args.output or os.path.join(ROOT, "output", "demo_quick" if args.quick else "demo"))
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.quick:  # keep the quick world apart from the full one
        env["DETECTRON2_DATASETS"] = os.path.join(out, "datasets")
    data_root = os.path.join(env.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")), "shapes_world")
    os.environ["DETECTRON2_DATASETS"] = os.path.dirname(data_root)
    teacher = os.path.join(data_root, "teacher", "clip_world.pt")
    text = os.path.join(data_root, "teacher", "clip_world_text.npy")
    rpn_dir = os.path.join(out, "rpn")
    store = os.path.join(out, "region_embeddings", "shapes_world_train_ov")
    py = sys.executable
    train_net = [py, os.path.join(ROOT, "train_net.py"), "--resume"]
    log = lambda name: os.path.join(out, f"{name}.log")  # noqa: E731
    seconds = {}
    t0 = time.time()

    # 1. data
    if _check_world(data_root, size):
        seconds["data"] = _skip("data", data_root)
    else:
        seconds["data"] = _stage("data", [
            py, os.path.join(ROOT, "datasets", "prepare_shapes_world.py"), "--root", data_root,
            "--num-train", str(size.num_train), "--num-val", str(size.num_val)],
            env, log("data"), _lines_with(".json", "images under"))

    # 2. teacher
    if os.path.isfile(teacher) and os.path.isfile(os.path.splitext(teacher)[0] + ".json"):
        seconds["teacher"] = _skip("teacher", teacher)
    else:
        seconds["teacher"] = _stage("teacher", [
            py, os.path.join(ROOT, "tools", "train_world_teacher.py"), "--world", data_root,
            "--output", teacher, "--images", str(size.teacher_images), "--steps", str(size.teacher_steps)],
            env, log("teacher"), _lines_with("rendered", "wrote"))

    # 3. class-agnostic RPN on base categories, evaluated by proposal recall
    schedule = lambda iters: ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.8)},)",  # noqa: E731
                              "SOLVER.WARMUP_ITERS", str(min(50, iters // 2))]
    rpn_config = os.path.join(CONFIGS, "rpn_R_18_FPN_tiny.yaml")
    rpn_opts = ["MODEL.DEVICE", device, "OUTPUT_DIR", rpn_dir]
    if _trained(rpn_dir, RPN_DONE_KEY):
        seconds["rpn"] = _skip("rpn", os.path.join(rpn_dir, "model_final.pth"))
    else:
        seconds["rpn"] = _stage("rpn", [*train_net, "--config-file", rpn_config, *rpn_opts,
                                        *schedule(size.rpn_iters)],
                                env, log("rpn"), _training_progress)

    # 4. text embeddings of the 36 categories (train and val share them)
    if os.path.isfile(text) and os.path.isfile(os.path.splitext(text)[0] + ".json"):
        seconds["text"] = _skip("text", text)
    else:
        seconds["text"] = _stage("text", [
            py, os.path.join(ROOT, "tools", "precompute_text_embeddings.py"), "--teacher", teacher,
            "--dataset", "shapes_world_val", "--output", text, "--device", device],
            env, log("text"), _lines_with("wrote"))

    # 5. region embeddings of the base-training images (resumes by itself)
    seconds["regions"] = _stage("regions", [
        py, os.path.join(ROOT, "tools", "precompute_region_embeddings.py"), "--teacher", teacher,
        "--dataset", "shapes_world_train_ov", "--config-file", rpn_config,
        "--output", store, "--num-regions", str(size.num_regions), "--device", device,
        "MODEL.WEIGHTS", os.path.join(rpn_dir, "model_final.pth")],
        env, log("regions"), _lines_with("summary:"))

    # 6. the four detectors
    vild_opts = ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", text, "MODEL.VILD.NUM_DISTILL_REGIONS", str(size.num_regions)]
    model_cfgs = []
    for key, config_name, title, _ in MODELS:
        model_dir = os.path.join(out, key)
        opts = ["MODEL.DEVICE", device, "OUTPUT_DIR", model_dir, *schedule(size.detector_iters)]
        if key.startswith("vild"):
            opts += vild_opts + (["DATASETS.REGION_STORE_TRAIN", store] if key != "vild_text" else [])
        config = os.path.join(CONFIGS, config_name)
        if _trained(model_dir, "segm/AP"):
            seconds[key] = _skip(key, os.path.join(model_dir, "model_final.pth"))
        else:
            seconds[key] = _stage(key, [*train_net, "--config-file", config, *opts],
                                  env, log(key), _training_progress)
        model_cfgs.append((title, config, opts + ["MODEL.WEIGHTS", os.path.join(model_dir, "model_final.pth")]))

    # 7. pictures
    print("\n== pictures", flush=True)
    import vild_d2  # noqa: F401  (registers datasets, under the root chosen above)
    from vild_d2.config import load_config
    from vild_d2.utils.visualize import draw_detections

    picture = draw_detections([(title, load_config(config, opts)) for title, config, opts in model_cfgs],
                              "shapes_world_val", os.path.join(out, "detections_val.png"))
    print(f"   {os.path.relpath(picture, ROOT)}")

    with open(os.path.splitext(teacher)[0] + ".json") as f:
        teacher_report = json.load(f)["zero_shot_val"]
    results = {
        "size": vars(size), "device": device, "seconds": seconds, "total_seconds": time.time() - t0,
        "models": [{"key": key, "title": title, "trained_on": on,
                    "metrics": {k_: v for k_, v in _last_evaluation(os.path.join(out, key), "segm/AP").items()
                                if k_.startswith(("bbox/", "segm/"))}}
                   for key, _, title, on in MODELS],
        "rpn": {"k": RECALL_K, **{k_.split("/", 1)[1]: v for k_, v in
                                  _last_evaluation(rpn_dir, RPN_DONE_KEY).items() if k_.startswith("proposals/")}},
        "teacher": teacher_report,
    }
    from vild_d2.utils.atomic_io import atomic_write_json

    atomic_write_json(os.path.join(out, "results.json"), results)
    print(f"\n== results on shapes_world_val (LVIS AP, %; rare = novel), {results['total_seconds']:.0f}s in all\n")
    print(results_table(results))
    print("\nViLD's claims on this world (mask AP):")
    print(target_lines(results))
    print(f"\n(results: {os.path.relpath(os.path.join(out, 'results.json'), ROOT)})")


if __name__ == "__main__":
    main()
