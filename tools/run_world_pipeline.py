#!/usr/bin/env python
"""
The main job: the whole ViLD pipeline on the embedded shapes world, on this machine.

    python tools/run_world_pipeline.py           # the full run (~26 min on 2 CPU cores)
    python tools/run_world_pipeline.py --seed 1  # another world (and training seed)
    python tools/run_world_pipeline.py --quick   # a few minutes: a smoke run

Stages, each a normal command you would also run on LVIS (printed as it starts; its
full output goes to OUTPUT/<stage>.log):
  1. data      datasets/prepare_shapes_world.py: world v4 (48 categories; 22 novel = rare,
               10 compositional + 12 new concepts)
  2. teacher   tools/train_world_teacher.py: the world's CLIP, which has seen every category
     pretrain  tools/pretrain_world_detector.py: the detector's backbone and box head learn
               to tell the 8 shapes apart on rendered scenes of every category (the world's
               ImageNet: it labels shapes, never categories)
  3. base      train_net.py, configs/shapes_world/base_R_18_FPN_tiny.yaml: Mask R-CNN on
               the base categories, from the pretraining; its weights initialise all four
               detectors (the role ImageNet weights play on LVIS) and its RPN proposes the
               distillation regions
     rpn       train_net.py --eval-only, configs/shapes_world/rpn_R_18_FPN_tiny.yaml with
               those weights: the RPN's recall of novel vs base val objects
  4. text      tools/precompute_text_embeddings.py: the 48 categories' embeddings
  5. regions   tools/precompute_region_embeddings.py: the RPN's top M proposals of every
               base-training image, embedded by the teacher
  6. models    train_net.py: ViLD-text, ViLD, ViLD-ensemble (on shapes_world_train_ov,
               rare = novel annotations removed; tau = 1 / the teacher's logit scale) and
               the supervised Mask R-CNN (on shapes_world_train, all categories); each
               evaluated with LVISEvaluator
  7. transfer  train_net.py --eval-only: the three ViLD models, no retraining, on val and on
               shapes_world_transfer (another vocabulary), each with its own embeddings
  8. analysis  APr per kind of novel category, the "CLIP on cropped regions" baseline, the
               heads' top-1 accuracy on val boxes, 90% bootstrap intervals, ViLD's claims,
               and the val classes detected as 8 shapes x 6 colours (systematic expansion)
  9. pictures  OUTPUT/detections_val.png: the models on the same val images;
               OUTPUT/expansion_val.png: ViLD-text and ViLD with the 48 names vs shapes x colours
Stages that do not depend on each other run side by side (--jobs, default 2 on a CPU):
the teacher lane (teacher, text) beside the detector lane (pretrain, base, rpn), then the
four detectors and the transfer evaluations two at a time, each process with cores / 2
threads (on 2 cores each detector trained at ~1.4x the throughput; the conv-heavy teacher
and pretraining gain little).
A stage whose result is complete is skipped, so a killed run resumes where it stopped
(delete OUTPUT to start over). Results: the tables printed at the end and
OUTPUT/results.json.
"""

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "shapes_world")
RECALL_K = 300  # the RPN's recall is reported at its POST_NMS_TOPK_TEST (rpn_R_18_FPN_tiny.yaml)
RPN_DONE_KEY = f"proposals/AR@{RECALL_K}"  # in the RPN's eval_results.json once it was evaluated
EVAL_RESULTS_FILE = "eval_results.json"  # what train_net.py --eval-only writes
DEFAULT_SEED = 0  # the world of datasets/shapes_world; other seeds get their own world
ANALYSIS_VERSION = 3  # bumped when the analysis computes something new (its cache is then redone)
TRANSFER_DATASET = "shapes_world_transfer"  # another vocabulary of the same world (stage 7)
PRETRAIN_LABELS = "shapes"  # what the world's ImageNet labels (tools/pretrain_world_detector.py)


@dataclass
class DemoSize:
    """How big each stage is: the full run and the --quick one."""

    num_train: int  # shapes world training images
    num_val: int  # shapes world val images
    teacher_images: int  # the teacher's own rendered images
    teacher_steps: int  # the teacher's contrastive training steps
    pretrain_images: int  # scenes rendered for the base detector's RoI-classification pretraining
    pretrain_steps: int  # its steps (batches of 128 crops; 16 in --quick)
    base_iters: int  # iterations of the base detector (the detectors' initialisation and RPN)
    detector_iters: int  # iterations of each of the four detectors
    num_regions: int  # M: distillation regions per training image
    bootstrap_samples: int  # resamples of the val images for the claims' intervals
    num_transfer: int  # images of the transfer dataset (another vocabulary)


FULL = DemoSize(
    # 400 overfitted: the base detector's top-1 on val base boxes was 62.5% (85.4% on its
    # training boxes); 2000 gave 74.4% (seed 0, same schedule)
    num_train=2000,
    num_val=100,
    teacher_images=1500,
    teacher_steps=1500,  # 1200 gave 81.5% top-1 instead of 90.1% (seed 0)
    pretrain_images=3000,
    pretrain_steps=250,
    # 1200 with pretraining 300: 33.6 min in all (seed 0; the stages side by side)
    base_iters=800,
    detector_iters=350,
    num_regions=32,
    bootstrap_samples=400,
    num_transfer=60,
)
QUICK = DemoSize(
    num_train=24,
    num_val=8,
    teacher_images=64,
    teacher_steps=10,
    pretrain_images=16,
    pretrain_steps=2,
    base_iters=10,
    detector_iters=10,
    num_regions=8,
    bootstrap_samples=20,
    num_transfer=4,
)

# (output folder, config, title, training set) of the four compared detectors.
MODELS = [
    ("vild_text", "vild_text_R_18_FPN_tiny.yaml", "ViLD-text", "base"),
    ("vild", "vild_R_18_FPN_tiny.yaml", "ViLD", "base"),
    ("vild_ensemble", "vild_ensemble_R_18_FPN_tiny.yaml", "ViLD-ensemble", "base"),
    (
        "mask_rcnn_supervised",
        "mask_rcnn_R_18_FPN_tiny.yaml",
        "Mask R-CNN (supervised)",
        "base+novel",
    ),
]
CROPS_KEY, CROPS_TITLE = "clip_on_crops", "CLIP on cropped regions"
AP_COLUMNS = ["AP", "APr", "APr-compositional", "APr-concept", "APc", "APf"]
GROUPS = ["all", "novel", "compositional", "concept", "base"]


def _rel(path: str) -> str:
    """``path`` relative to ROOT (where stages run) if inside it: shorter command lines."""
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def _stage(name: str, cmd, env, log_path: str, show) -> float:
    """Run one stage now (vild_d2.utils.stage_runner: own process group, full log, signals
    forwarded); its seconds."""
    return _stages([[_new_stage(name, cmd, log_path, show)]], env, 1)[name]


def _new_stage(name: str, cmd, log_path: str, show):
    from vild_d2.utils.stage_runner import Stage

    return Stage(name, cmd, log_path, show, cwd=ROOT)


def _stages(jobs, env, slots: int) -> dict:
    """Run ``jobs`` (lists of stages, each list in order) with ``slots`` of them at once."""
    from vild_d2.utils.stage_runner import run_stages

    return run_stages(jobs, env, slots)


def _skip(name: str, what: str) -> float:
    """A finished stage is not run again: its output ``what`` is read back first."""
    problem = _unreadable(what)
    if problem:
        sys.exit(
            f"run_world_pipeline.py: error: stage '{name}': {what} {problem}; delete it (or the"
            " stage's folder) and run again to redo the stage"
        )
    print(f"\n== {name}: {what} exists, skipped")
    return 0.0


def _unreadable(path: str) -> str:
    """Why a finished stage's output file cannot be used ("" if it can; folders pass)."""
    # (vild_d2 is imported once DETECTRON2_DATASETS is set: it registers datasets on import)
    from vild_d2.config import checkpoint_problem

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


def _training_progress(line: str):
    """detectron2's periodic 'eta: .. iter: N  total_loss: ..' line, shortened."""
    if " iter: " not in line or "total_loss" not in line or "eta:" not in line:
        return None
    return line[line.index("eta:") : line.index("time:")].strip() if "time:" in line else None


def _lines_with(*words):
    def show(line: str):
        line = line.rstrip()
        return line if any(w in line for w in words) else None

    return show


def _metrics_rows(output_dir: str) -> list:
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _last_evaluation(output_dir: str, key: str) -> dict:
    """The last row of OUTPUT_DIR/metrics.json that holds ``key`` ({} if none)."""
    rows = [r for r in _metrics_rows(output_dir) if key in r]
    return rows[-1] if rows else {}


def _eval_results(output_dir: str) -> dict:
    """OUTPUT_DIR/eval_results.json of ``train_net.py --eval-only`` ({} if none)."""
    path = os.path.join(output_dir, EVAL_RESULTS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _trained(output_dir: str, key: str) -> bool:
    return os.path.isfile(os.path.join(output_dir, "model_final.pth")) and bool(
        _last_evaluation(output_dir, key)
    )


def loss_flatness(output_dir: str, key: str = "total_loss") -> dict:
    """
    The training loss over the last fifth of the iterations: its mean over the first and
    the second half of that fifth, and their relative change (flat: a few % at most).
    """
    rows = [
        (r["iteration"], r[key]) for r in _metrics_rows(output_dir) if key in r and "iteration" in r
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


def _world_matches(data_root: str, spec) -> bool:
    """True if the world exists with ``spec``; exits if it exists with another."""
    from vild_d2.data.datasets.shapes_world import spec_from_json

    train_json = os.path.join(data_root, "annotations", "train.json")
    if not os.path.isfile(os.path.join(data_root, "annotations", "val.json")):
        return False
    found = spec_from_json(train_json)
    if asdict(found) != asdict(spec):
        diff = {
            k: (v, asdict(spec)[k]) for k, v in asdict(found).items() if asdict(spec).get(k) != v
        }
        sys.exit(
            f"{data_root} holds another shapes world (found vs wanted: {diff}). Delete the folder "
            "(it is regenerated, with its teacher) or point DETECTRON2_DATASETS elsewhere."
        )
    return True


def _pretraining_matches(checkpoint: str, labels: str) -> bool:
    """True if the pretraining exists with ``labels``; exits if it exists with others."""
    info_file = os.path.splitext(checkpoint)[0] + ".json"
    if not (os.path.isfile(checkpoint) and os.path.isfile(info_file)):
        return False
    with open(info_file) as f:
        found = json.load(f).get("labels", "base-categories")  # before --labels: base ones
    if found != labels:
        out = os.path.dirname(os.path.dirname(checkpoint))
        sys.exit(
            f"{checkpoint} was pretrained with --labels {found}, this pipeline uses {labels}. "
            f"Delete {out} (everything in it follows from that pretraining) or pass --output."
        )
    return True


def _num_images(json_file: str) -> int:
    """Images of an annotation json (-1 if it does not exist)."""
    if not os.path.isfile(json_file):
        return -1
    with open(json_file) as f:
        return len(json.load(f)["images"])


def _categories(json_file: str) -> list:
    with open(json_file) as f:
        return json.load(f)["categories"]


def _expansion_vocabulary(spec, teacher: str):
    """The world's shapes as nouns and colours as attributes: pairs in the world's class order."""
    from vild_d2.data.datasets.shapes_world import category_names
    from vild_d2.data.vocabulary import dataset_vocabulary
    from vild_d2.inference import expanded_vocabulary
    from vild_d2.teacher import load_clip

    dim = int(load_clip(teacher)[0].text_projection.shape[1])
    vocab = expanded_vocabulary(
        ",".join((*spec.shapes, *spec.concept_shapes)), ",".join(spec.colours), teacher, dim
    )
    if vocab.names != category_names(spec):
        raise AssertionError(
            f"noun x attribute pairs {vocab.names[:4]}... are not the world's classes"
        )
    vocab.base_mask = dataset_vocabulary("shapes_world_val")["base_mask"]
    return vocab


def teacher_temperature(teacher: str) -> float:
    """
    tau for the ViLD heads: 1 / the teacher's learned logit scale. CLIP's is 100, which is
    the paper's tau = 0.01; the world's teacher learns its own (about 16), and its image and
    text embeddings are only as far apart as that scale made them.
    """
    from vild_d2.teacher import load_clip

    model, _ = load_clip(teacher)
    return 1.0 / model.logit_scale.detach().exp().item()


def _fmt(v) -> str:
    return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.1f}"


def results_table(results: dict) -> str:
    """Markdown tables: mask AP, box AP (with the CLIP-on-crops baseline) and diagnostics."""
    header = "| model | trained on | " + " | ".join(AP_COLUMNS) + " |"
    rule = "|---|---|" + "---:|" * len(AP_COLUMNS)
    lines = []
    for task, title in (
        ("segm", "mask AP (%), LVIS protocol, rare = novel"),
        ("bbox", "box AP (%)"),
    ):
        lines += [f"**{title}**", "", header, rule]
        rows = results["models"] + (
            [results["clip_on_crops"]] if task == "bbox" and results.get("clip_on_crops") else []
        )
        for row in rows:
            ap = row.get("ap", {}).get(task, {})
            lines.append(
                f"| {row['title']} | {row['trained_on']} | "
                + " | ".join(_fmt(ap.get(c)) for c in AP_COLUMNS)
                + " |"
            )
        lines.append("")
    rpn, k = results["rpn"], results["rpn"]["k"]
    lines += [
        "**diagnostics**",
        "",
        "| diagnostic | " + " | ".join(GROUPS) + " |",
        "|---|" + "---:|" * len(GROUPS),
    ]
    suffix = {
        "all": "",
        "novel": "_novel",
        "compositional": "_compositional",
        "concept": "_concept",
        "base": "_base",
    }
    lines.append(
        f"| RPN recall@{k} (IoU 0.5), % | "
        + " | ".join(_fmt(rpn.get(f"R50{suffix[g]}@{k}")) for g in GROUPS)
        + " |"
    )
    lines.append(
        f"| RPN AR@{k} (IoU 0.5:0.95), % | "
        + " | ".join(_fmt(rpn.get(f"AR{suffix[g]}@{k}")) for g in GROUPS)
        + " |"
    )
    teacher = results["teacher"]
    lines.append(
        "| teacher zero-shot top-1 on val boxes, % | "
        + " | ".join(_fmt(teacher.get("accuracy" + suffix[g])) for g in GROUPS)
        + " |"
    )
    extra = ["base, base classes only", "cosine to true class"]
    heads_rows = []
    accuracy = results.get("head_accuracy", {})
    for key, title in (
        (row["key"], row["title"]) for row in results["models"] if row["key"] in accuracy
    ):
        heads = accuracy[key]
        for head, acc in heads.items():
            lines.append(
                f"| {title} {head} top-1 on val boxes, % | "
                + " | ".join(_fmt(acc.get(g)) for g in GROUPS)
                + " |"
            )
            heads_rows.append(
                f"| {title} {head} | {_fmt(acc.get('base'))} | "
                + " | ".join(_fmt(acc.get(e)) for e in extra)
                + " |"
            )
    lenient = results.get("segm_without_negative_lists", {})
    if lenient:  # what the protocol of the world before v3 would have reported
        lines += [
            "",
            "| model | mask AP | mask APf | the same without val's negative lists: AP | APf |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in results["models"]:
            strict, loose = row["ap"]["segm"], lenient.get(row["key"], {})
            lines.append(
                f"| {row['title']} | {_fmt(strict.get('AP'))} | {_fmt(strict.get('APf'))} "
                f"| {_fmt(loose.get('AP'))} | {_fmt(loose.get('APf'))} |"
            )
    if heads_rows:  # why novel classes win: region embeddings far from every text embedding
        lines += [
            "",
            (
                "| head | top-1 on base boxes, all classes, % | same, base classes only, % "
                "| mean cosine to the true class ×100 |"
            ),
            "|---|---:|---:|---:|",
            *heads_rows,
        ]
    titles = {row["key"]: row["title"] for row in results["models"]}
    if results.get("transfer"):
        lines += [
            "",
            (
                f"**transfer** (mask AP, no retraining): `{TRANSFER_DATASET}`, another vocabulary"
                f" ({results.get('transfer_classes', '?')} classes: blue/red/yellow x 8 shapes;"
                " objects of the other colours are outside it), evaluated in the same run as val"
                " with its own embeddings"
            ),
            "",
            "| model | val AP | transfer AP | APr | APc | APf |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key in (row["key"] for row in results["models"] if row["key"] in results["transfer"]):
            val, tr = results["transfer"][key].get("val", {}), results["transfer"][key].get(
                "transfer", {}
            )
            lines.append(
                f"| {titles[key]} | {_fmt(val.get('AP'))} | {_fmt(tr.get('AP'))} |"
                f" {_fmt(tr.get('APr'))} | {_fmt(tr.get('APc'))} | {_fmt(tr.get('APf'))} |"
            )
    if results.get("expansion"):
        lines += [
            "",
            (
                "**systematic expansion** (mask AP on val): the 48 classes as 8 shapes x 6 colours,"
                " scored p(shape | r) p(colour | r), vs the 48 names' own embeddings"
            ),
            "",
            "| model | 48 names: AP | APr | shapes x colours: AP | APr | APc | APf |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["models"]:
            ex = results["expansion"].get(row["key"])
            if ex is None:
                continue
            ap = row["ap"]["segm"]
            lines.append(
                f"| {row['title']} | {_fmt(ap.get('AP'))} | {_fmt(ap.get('APr'))} |"
                f" {_fmt(ex.get('AP'))} | {_fmt(ex.get('APr'))} | {_fmt(ex.get('APc'))} |"
                f" {_fmt(ex.get('APf'))} |"
            )
    return "\n".join(lines)


def claim_lines(results: dict) -> str:
    if results.get("quick"):
        return (
            "  (smoke run: a tiny world trained for a few iterations; its numbers mean nothing, "
            "so ViLD's claims are not checked)"
        )
    out = []
    for c in results["claims"]:
        out.append(
            f"  [{'met' if c['met'] else 'MISSED'}] ({c['name']}) {c['text']}: {c['detail']}"
        )
    out.append(
        "  90% bootstrap intervals of the differences (mask AP, "
        f"{results['bootstrap_samples']} resamples of the val images):"
    )
    titles = {row["key"]: row["title"] for row in results["models"]}
    for r in results["intervals"]:
        out.append(
            f"    {titles[r['a']]} - {titles[r['b']]}, {r['metric']}: {r['diff']:+.1f} "
            f"[{r['lo']:+.1f}, {r['hi']:+.1f}]"
        )
    return "\n".join(out)


def _fingerprint(paths) -> list:
    return [
        [os.path.relpath(p, ROOT), os.path.getsize(p), int(os.path.getmtime(p))]
        for p in paths
        if os.path.isfile(p)
    ]


def analyse(
    out: str,
    model_cfgs: list,
    rpn_cfg,
    teacher_path: str,
    text_path: str,
    size: DemoSize,
    device: str,
    seed: int,
) -> dict:
    """
    Stage 8: AP per kind of novel category and bootstrap intervals (from each model's LVIS
    results), the CLIP-on-crops baseline, the heads' top-1 accuracy. Cached in
    OUTPUT/analysis.json, keyed by the models' and the teacher's files.
    """
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset
    from detectron2.modeling import build_model

    from vild_d2.data.datasets.shapes_world import spec_from_json
    from vild_d2.evaluation import build_evaluator
    from vild_d2.evaluation.claims import CLAIM_COMPARISONS
    from vild_d2.evaluation.lvis_ap import LVISAPTable, bootstrap_differences
    from vild_d2.evaluation.region_classification import (
        clip_on_crops_detections,
        head_accuracy,
        lvis_results,
    )
    from vild_d2.modeling.text_embeddings import load_text_embeddings
    from vild_d2.teacher import load_clip
    from vild_d2.teacher.proposals import RPNProposals
    from vild_d2.utils.atomic_io import atomic_write_json

    cache = os.path.join(out, "analysis.json")
    inputs = _fingerprint(
        [teacher_path, text_path, rpn_cfg.MODEL.WEIGHTS]
        + [cfg.MODEL.WEIGHTS for _, _, cfg in model_cfgs]
    ) + [size.bootstrap_samples, seed, ANALYSIS_VERSION]
    if os.path.isfile(cache):
        with open(cache) as f:
            cached = json.load(f)
        if cached.get("inputs") == inputs:
            print("\n== analysis: up to date, skipped")
            return cached
    print("\n== analysis", flush=True)
    t0 = time.time()
    dataset = "shapes_world_val"
    dicts = DatasetCatalog.get(dataset)  # also sets the metadata read below
    meta = MetadataCatalog.get(dataset)
    gt_json = meta.json_file
    kinds = list(getattr(meta, "class_novel_kind", [""] * len(meta.thing_classes)))
    contiguous_to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    cat_groups = {  # dataset category ids
        "APr-compositional": [
            contiguous_to_id[i] for i, k in enumerate(kinds) if k == "compositional"
        ],
        "APr-concept": [contiguous_to_id[i] for i, k in enumerate(kinds) if k == "concept"],
    }
    contiguous_groups = {
        "novel": [i for i, f in enumerate(meta.class_frequency) if f == "r"],
        "compositional": [i for i, k in enumerate(kinds) if k == "compositional"],
        "concept": [i for i, k in enumerate(kinds) if k == "concept"],
        "base": [i for i, f in enumerate(meta.class_frequency) if f != "r"],
    }

    def ap_of(results_file_or_list, iou_type):
        table = LVISAPTable(gt_json, results_file_or_list, iou_type, max_dets=300)
        groups = {**table.frequency_groups(), **cat_groups}
        return table, table.summary(table.category_ap(), groups), groups

    # the same results scored as if val had no negative lists (the world's json before v3):
    # LVIS then ignores a category's detections on every image without that category
    with open(gt_json) as f:
        lenient = json.load(f)
    for img in lenient["images"]:
        img["neg_category_ids"] = []
    lenient_json = os.path.join(out, "val_without_negatives.json")
    atomic_write_json(lenient_json, lenient)

    ap, tables, groups, without_negatives = {}, {}, None, {}
    for key, _, cfg in model_cfgs:
        results_file = os.path.join(
            cfg.OUTPUT_DIR, "inference", dataset, "lvis_instances_results.json"
        )
        ap[key] = {}
        for iou_type in ("segm", "bbox"):
            table, summary, groups = ap_of(results_file, iou_type)
            ap[key][iou_type] = summary
            if iou_type == "segm":
                tables[key] = table
        table = LVISAPTable(lenient_json, results_file, "segm", max_dets=300)
        without_negatives[key] = table.summary(table.category_ap(), table.frequency_groups())
    print(f"   AP per kind of novel category ({time.time() - t0:.0f}s)", flush=True)

    teacher, _ = load_clip(teacher_path, device=device)
    text = load_text_embeddings(
        text_path,
        embed_dim=teacher.text_projection.shape[1],
        config_key="MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
    )
    crops = clip_on_crops_detections(
        teacher,
        text,
        RPNProposals(rpn_cfg),
        dicts,
        detections_per_image=model_cfgs[0][2].TEST.DETECTIONS_PER_IMAGE,
        progress=False,
    )
    _, crops_ap, _ = ap_of(lvis_results(crops, contiguous_to_id), "bbox")
    print(f"   CLIP on cropped regions ({time.time() - t0:.0f}s)", flush=True)

    heads = {}
    for key, _, cfg in model_cfgs:
        if cfg.MODEL.META_ARCHITECTURE != "ViLDRCNN":
            continue
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        with torch.no_grad():
            heads[key] = head_accuracy(cfg, model, dicts, text, contiguous_groups)
    print(f"   heads' top-1 accuracy ({time.time() - t0:.0f}s)", flush=True)

    expansion = {}
    world = spec_from_json(
        os.path.join(os.path.dirname(os.path.dirname(gt_json)), "annotations", "train.json")
    )
    vocab = _expansion_vocabulary(world, teacher_path)
    for key, _, cfg in model_cfgs:
        if cfg.MODEL.META_ARCHITECTURE != "ViLDRCNN":
            continue
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        model.set_vocabulary(vocab.embeddings, vocab.base_mask, vocab.attribute_embeddings)
        evaluator = build_evaluator(cfg, dataset, os.path.join(out, "expansion", key))
        with contextlib.redirect_stdout(io.StringIO()):  # the evaluator's tables; we print ours
            res = inference_on_dataset(model, build_detection_test_loader(cfg, dataset), evaluator)
        expansion[key] = dict(res["segm"])
    print(f"   systematic expansion ({time.time() - t0:.0f}s)", flush=True)

    intervals = bootstrap_differences(
        tables, CLAIM_COMPARISONS, groups, num_samples=size.bootstrap_samples, seed=seed
    )
    print(f"   bootstrap ({size.bootstrap_samples} resamples, {time.time() - t0:.0f}s)", flush=True)
    result = {
        "inputs": inputs,
        "ap": ap,
        "clip_on_crops": {"bbox": crops_ap},
        "head_accuracy": heads,
        "intervals": intervals,
        "segm_without_negative_lists": without_negatives,
        "expansion": expansion,
        "seconds": time.time() - t0,
    }
    atomic_write_json(cache, result)
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny world and a few iterations (a smoke run)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=(
            "the world's seed, also the teacher's and the detectors' training seed "
            f"(default {DEFAULT_SEED}; other seeds keep their world in OUTPUT/datasets)"
        ),
    )
    p.add_argument(
        "--output", default=None, help="output folder (default output/demo[_quick][_seedN])"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=(
            "stages that do not depend on each other run this many at a time, each with "
            "cores / jobs threads (default: 2 on a CPU with 2 or more cores, else 1)"
        ),
    )
    args = p.parse_args()

    import torch

    size = QUICK if args.quick else FULL
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.jobs is None:
        args.jobs = 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    default_out = (
        "demo"
        + ("_quick" if args.quick else "")
        + (f"_seed{args.seed}" if args.seed != DEFAULT_SEED else "")
    )
    out = os.path.abspath(args.output or os.path.join(ROOT, "output", default_out))
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.quick or args.seed != DEFAULT_SEED:  # keep other worlds apart from the default one
        env["DETECTRON2_DATASETS"] = os.path.join(out, "datasets")
    data_root = os.path.join(
        env.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")), "shapes_world"
    )
    os.environ["DETECTRON2_DATASETS"] = os.path.dirname(data_root)
    # (vild_d2 registers its datasets on import: only now, under the root chosen above)
    from vild_d2.utils.folder_lock import FolderBusyError, lock_folder

    try:
        lock = lock_folder(out, "tools/run_world_pipeline.py")  # noqa: F841  (held until exit)
    except FolderBusyError as e:
        sys.exit(f"run_world_pipeline.py: error: {e}")
    teacher = os.path.join(data_root, "teacher", "clip_world.pt")
    text = os.path.join(data_root, "teacher", "clip_world_text.npy")
    rpn_dir = os.path.join(out, "rpn")
    store = os.path.join(out, "region_embeddings", "shapes_world_train_ov")
    py = sys.executable
    train_net = [py, os.path.join(ROOT, "train_net.py"), "--resume"]
    log = lambda name: os.path.join(out, f"{name}.log")  # noqa: E731
    seconds = {}
    t0 = time.time()

    from vild_d2.data.datasets import ShapesWorldSpec

    spec = ShapesWorldSpec(seed=args.seed, num_train=size.num_train, num_val=size.num_val)

    # 1. data
    if _world_matches(data_root, spec):
        seconds["data"] = _skip("data", data_root)
    else:
        seconds["data"] = _stage(
            "data",
            [
                py,
                os.path.join(ROOT, "datasets", "prepare_shapes_world.py"),
                "--root",
                data_root,
                "--num-train",
                str(size.num_train),
                "--num-val",
                str(size.num_val),
                "--seed",
                str(args.seed),
                "--num-transfer",
                str(size.num_transfer),
            ],
            env,
            log("data"),
            _lines_with(".json", "images under"),
        )
    if _num_images(os.path.join(data_root, "annotations", "transfer.json")) != size.num_transfer:
        seconds["data"] += _stage(
            "data (transfer)",
            [
                py,
                os.path.join(ROOT, "datasets", "prepare_shapes_world.py"),
                "--root",
                data_root,
                "--transfer-only",
                "--num-transfer",
                str(size.num_transfer),
            ],
            env,
            log("data_transfer"),
            _lines_with(".json"),
        )

    # 2-4. two lanes side by side (--jobs): the teacher, then its text embeddings (the 48
    # categories and the transfer vocabulary); and the pretraining, the base detector (every
    # detector's initialisation) and its RPN's recall
    teacher_lane, base_lane = [], []
    if os.path.isfile(teacher) and os.path.isfile(os.path.splitext(teacher)[0] + ".json"):
        seconds["teacher"] = _skip("teacher", teacher)
    else:
        teacher_lane.append(
            _new_stage(
                "teacher",
                [
                    py,
                    os.path.join(ROOT, "tools", "train_world_teacher.py"),
                    "--world",
                    data_root,
                    "--output",
                    teacher,
                    "--images",
                    str(size.teacher_images),
                    "--steps",
                    str(size.teacher_steps),
                    "--seed",
                    str(args.seed),
                ],
                log("teacher"),
                _lines_with("rendered", "wrote"),
            )
        )

    # 3. the base detector (every detector's initialisation) and its RPN's recall
    def schedule(iters):
        return [
            "SOLVER.MAX_ITER",
            str(iters),
            "SOLVER.STEPS",
            f"({int(iters * 0.8)},)",
            "SOLVER.WARMUP_ITERS",
            str(min(50, iters // 2)),
            "SEED",
            str(42 + args.seed),
        ]

    # 3a. RoI-classification pretraining, the world's ImageNet: rendered scenes of every
    # category, labelled by shape only (never by category). With base-only scenes labelled
    # by category, the detectors knew only the base shapes: mask AP 26.0 / APf 34.2 (ViLD),
    # supervised APf 39.1; with shapes, 33.7 / 46.2 and 47.6 (seed 0, docs/teacher.md).
    pretrained = os.path.join(out, "pretrain", "roi_classifier.pth")
    if _pretraining_matches(pretrained, PRETRAIN_LABELS):
        seconds["pretrain"] = _skip("pretrain", pretrained)
    else:
        base_lane.append(
            _new_stage(
                "pretrain",
                [
                    py,
                    os.path.join(ROOT, "tools", "pretrain_world_detector.py"),
                    "--world",
                    data_root,
                    "--config-file",
                    os.path.join(CONFIGS, "base_R_18_FPN_tiny.yaml"),
                    "--output",
                    pretrained,
                    "--images",
                    str(size.pretrain_images),
                    "--steps",
                    str(size.pretrain_steps),
                    "--seed",
                    str(args.seed),
                    "--labels",
                    PRETRAIN_LABELS,
                    *(["--batch-size", "16"] if args.quick else []),
                    "MODEL.DEVICE",
                    device,
                ],
                log("pretrain"),
                _lines_with("rendered", "wrote"),
            )
        )

    base_dir = os.path.join(out, "base")
    base_weights = os.path.join(base_dir, "model_final.pth")
    if os.path.isfile(base_weights):
        seconds["base"] = _skip("base", base_weights)
    else:
        base_lane.append(
            _new_stage(
                "base",
                [
                    *train_net,
                    "--config-file",
                    os.path.join(CONFIGS, "base_R_18_FPN_tiny.yaml"),
                    "MODEL.DEVICE",
                    device,
                    "OUTPUT_DIR",
                    base_dir,
                    "MODEL.WEIGHTS",
                    pretrained,
                    "MODEL.BACKBONE.FREEZE_AT",
                    "2",
                    "DATASETS.TEST",
                    "()",
                    *schedule(size.base_iters),
                ],
                log("base"),
                _training_progress,
            )
        )
    rpn_config = os.path.join(CONFIGS, "rpn_R_18_FPN_tiny.yaml")
    rpn_opts = ["MODEL.DEVICE", device, "OUTPUT_DIR", rpn_dir, "MODEL.WEIGHTS", base_weights]
    if RPN_DONE_KEY in _eval_results(rpn_dir):
        seconds["rpn"] = _skip("rpn", os.path.join(rpn_dir, EVAL_RESULTS_FILE))
    else:
        base_lane.append(
            _new_stage(
                "rpn",
                [
                    py,
                    os.path.join(ROOT, "train_net.py"),
                    "--eval-only",
                    "--config-file",
                    rpn_config,
                    *rpn_opts,
                ],
                log("rpn"),
                _lines_with("copypaste"),
            )
        )

    # 4. text embeddings of the 48 categories (train and val share them) and of the transfer
    # dataset's vocabulary
    transfer_text = os.path.join(data_root, "teacher", "clip_world_transfer_text.npy")
    for name, dataset, output in (
        ("text", "shapes_world_val", text),
        ("transfer text", TRANSFER_DATASET, transfer_text),
    ):
        if os.path.isfile(output) and os.path.isfile(os.path.splitext(output)[0] + ".json"):
            seconds[name] = _skip(name, output)
            continue
        command = [py, os.path.join(ROOT, "tools", "precompute_text_embeddings.py")]
        command += ["--teacher", teacher, "--dataset", dataset, "--output", output]
        teacher_lane.append(
            _new_stage(
                name,
                [*command, "--device", device],
                log(name.replace(" ", "_")),
                _lines_with("wrote"),
            )
        )
    seconds.update(_stages([base_lane, teacher_lane], env, args.jobs))

    # 5. region embeddings of the base-training images (resumes by itself)
    seconds["regions"] = _stage(
        "regions",
        [
            py,
            os.path.join(ROOT, "tools", "precompute_region_embeddings.py"),
            "--teacher",
            teacher,
            "--dataset",
            "shapes_world_train_ov",
            "--config-file",
            rpn_config,
            "--output",
            store,
            "--num-regions",
            str(size.num_regions),
            "--device",
            device,
            "MODEL.WEIGHTS",
            base_weights,
        ],
        env,
        log("regions"),
        _lines_with("summary:"),
    )

    # 6. the four detectors, each initialised from the base detector
    tau = ["MODEL.VILD.TEMPERATURE", f"{teacher_temperature(teacher):.4g}"]
    vild_opts = [
        "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        text,
        "MODEL.VILD.NUM_DISTILL_REGIONS",
        str(size.num_regions),
        *tau,
    ]
    model_opts, detector_jobs = [], {}
    from vild_d2.config import load_config

    for key, config_name, title, _ in MODELS:
        model_dir = os.path.join(out, key)
        opts = [
            "MODEL.DEVICE",
            device,
            "OUTPUT_DIR",
            model_dir,
            "MODEL.WEIGHTS",
            base_weights,
            "MODEL.BACKBONE.FREEZE_AT",
            "2",
            *schedule(size.detector_iters),
        ]
        if key.startswith("vild"):
            opts += vild_opts + (
                ["DATASETS.REGION_STORE_TRAIN", store] if key != "vild_text" else []
            )
        config = os.path.join(CONFIGS, config_name)
        if _trained(model_dir, "segm/AP"):
            seconds[key] = _skip(key, os.path.join(model_dir, "model_final.pth"))
        else:
            detector_jobs[key] = [
                _new_stage(
                    key, [*train_net, "--config-file", config, *opts], log(key), _training_progress
                )
            ]
        final = opts + ["MODEL.WEIGHTS", os.path.join(model_dir, "model_final.pth")]
        model_opts.append((key, title, config, final))
    # side by side (--jobs), the longest first
    order = ["vild_ensemble", "vild", "mask_rcnn_supervised", "vild_text"]
    seconds.update(_stages([detector_jobs[k] for k in order if k in detector_jobs], env, args.jobs))
    model_cfgs = [(k, t, load_config(c, o)) for k, t, c, o in model_opts]

    # 7. transfer: the ViLD models, no retraining, on val and on another vocabulary at once
    transfer_jobs = []
    transfer_dirs = {}
    for key, config_name, _, _ in MODELS:
        if not key.startswith("vild"):
            continue  # a fixed classifier cannot take another vocabulary
        transfer_dirs[key] = os.path.join(out, "transfer", key)
        if f"{TRANSFER_DATASET}/segm/AP" in _eval_results(transfer_dirs[key]):
            seconds[f"transfer {key}"] = _skip(
                f"transfer {key}", os.path.join(transfer_dirs[key], EVAL_RESULTS_FILE)
            )
            continue
        transfer_jobs.append(
            _new_stage(
                f"transfer {key}",
                [
                    py,
                    os.path.join(ROOT, "train_net.py"),
                    "--eval-only",
                    "--config-file",
                    os.path.join(CONFIGS, config_name),
                    "MODEL.DEVICE",
                    device,
                    "OUTPUT_DIR",
                    transfer_dirs[key],
                    "MODEL.WEIGHTS",
                    os.path.join(out, key, "model_final.pth"),
                    "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
                    text,
                    *tau,
                    "DATASETS.TEST",
                    f"('shapes_world_val', '{TRANSFER_DATASET}')",
                    "DATASETS.TEXT_EMBEDDINGS_TEST",
                    f"('{_rel(text)}', '{_rel(transfer_text)}')",
                ],
                log(f"transfer_{key}"),
                _lines_with("copypaste: Task", "copypaste: AP,"),
            )
        )
    seconds.update(_stages([[stage] for stage in transfer_jobs], env, args.jobs))

    import vild_d2  # noqa: F401  (registers datasets, under the root chosen above)

    # 8. analysis
    t_analysis = time.time()
    analysis = analyse(
        out, model_cfgs, load_config(rpn_config, rpn_opts), teacher, text, size, device, args.seed
    )
    seconds["analysis"] = time.time() - t_analysis

    # 9. pictures
    print("\n== pictures", flush=True)
    from vild_d2.utils.visualize import draw_detections

    picture = draw_detections(
        [(title, cfg) for _, title, cfg in model_cfgs],
        "shapes_world_val",
        os.path.join(out, "detections_val.png"),
    )
    print(f"   {os.path.relpath(picture, ROOT)}")
    expansion = _expansion_vocabulary(spec, teacher)
    rows = []
    for key, title, cfg in model_cfgs:
        if key in ("vild_text", "vild"):
            rows += [
                (f"{title}, 48 names", cfg),
                (f"{title}, 8 shapes x 6 colours: p(shape) p(colour)", cfg, expansion),
            ]
    picture = draw_detections(rows, "shapes_world_val", os.path.join(out, "expansion_val.png"))
    print(f"   {os.path.relpath(picture, ROOT)}")

    from vild_d2.evaluation.claims import check_claims

    with open(os.path.splitext(teacher)[0] + ".json") as f:
        teacher_report = json.load(f)["zero_shot_val"]
    results = {
        "quick": args.quick,
        "seed": args.seed,
        "size": vars(size),
        "device": device,
        "seconds": seconds,
        "total_seconds": time.time() - t0,
        "bootstrap_samples": size.bootstrap_samples,
        "models": [
            {
                "key": key,
                "title": title,
                "trained_on": on,
                "ap": analysis["ap"][key],
                "loss_last_fifth": loss_flatness(os.path.join(out, key)),
                "lvis_evaluator": {
                    k_: v
                    for k_, v in _last_evaluation(os.path.join(out, key), "segm/AP").items()
                    if k_.startswith(("bbox/", "segm/"))
                },
            }
            for key, _, title, on in MODELS
        ],
        "clip_on_crops": {
            "key": CROPS_KEY,
            "title": CROPS_TITLE,
            "trained_on": "(teacher)",
            "ap": analysis["clip_on_crops"],
        },
        "rpn": {
            "k": RECALL_K,
            **{
                k_.split("/", 1)[1]: v
                for k_, v in _eval_results(rpn_dir).items()
                if k_.startswith("proposals/")
            },
        },
        "teacher": teacher_report,
        "head_accuracy": analysis["head_accuracy"],
        "segm_without_negative_lists": analysis["segm_without_negative_lists"],
        "intervals": analysis["intervals"],
        "transfer": {
            key: {
                name: {
                    k_.split("/", 2)[2]: v
                    for k_, v in _eval_results(d).items()
                    if k_.startswith(f"{dataset}/segm/")
                }
                for name, dataset in (("val", "shapes_world_val"), ("transfer", TRANSFER_DATASET))
            }
            for key, d in transfer_dirs.items()
        },
        "transfer_classes": len(
            _categories(os.path.join(data_root, "annotations", "transfer.json"))
        ),
        "expansion": analysis["expansion"],
    }
    results["claims"] = check_claims(
        {row["key"]: row["ap"]["segm"] for row in results["models"]}, analysis["intervals"]
    )
    from vild_d2.utils.atomic_io import atomic_write_json

    atomic_write_json(os.path.join(out, "results.json"), results)
    print(
        f"\n== results on shapes_world_val (seed {args.seed}), {results['total_seconds']:.0f}s in"
        " all\n"
    )
    print(results_table(results))
    print("\nViLD's claims on this world (mask AP):")
    print(claim_lines(results))
    print(f"\n(results: {os.path.relpath(os.path.join(out, 'results.json'), ROOT)})")


if __name__ == "__main__":
    main()
