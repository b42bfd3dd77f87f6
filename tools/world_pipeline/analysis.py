"""
The pipeline's analysis of the trained detectors on val: mask and box AP per kind of novel
category and their bootstrap intervals (from each model's LVIS results), the "CLIP on
cropped regions" baseline (the teacher as a detector), the heads' top-1 accuracy on val
boxes, the distilled models' fit to the teacher on their training regions (with a probe's
ceiling), and the val classes detected as 8 shapes x 6 colours (systematic expansion).
Cached in OUTPUT/analysis.json, keyed by the files it reads.

On a CPU with lanes (``--jobs`` 2) the parts that run models (the teacher's crops, heads and
fits; the expansion) run side by side in two processes of one thread each while the AP and
its intervals are computed here: on one process with both threads these models' small
batches kept the second core idle for much of the analysis.
"""

import contextlib
import io
import json
import os
import time

import vild_d2  # noqa: F401  (first: detectron2 imported quietly, in the parts' processes too)

# isort: split

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from vild_d2.data.region_store import RegionStore
from vild_d2.evaluation import build_evaluator
from vild_d2.evaluation.distillation_fit import distillation_fit
from vild_d2.evaluation.lvis_ap import LVISAPTable, bootstrap_differences
from vild_d2.evaluation.region_classification import (
    clip_on_crops_detections,
    head_accuracy,
    lvis_results,
)
from vild_d2.inference import expanded_vocabulary
from vild_d2.teacher import load_clip
from vild_d2.teacher.proposals import RPNProposals
from vild_d2.utils.atomic_io import atomic_write_json
from vild_d2.utils.logs import quiet_logger
from vild_d2.vocabulary.core import dataset_vocabulary
from vild_d2.vocabulary.embedding_files import load_text_embeddings
from vild_d2.world.spec import category_names, spec_from_json

from .artefacts import fingerprint
from .claims import CLAIM_COMPARISONS
from .context import ROOT, PipelineRun
from .runner import side_by_side
from .sizes import TRAIN_DATASET, VAL_DATASET

__all__ = ["analyse", "expansion_vocabulary", "ANALYSIS_VERSION"]

ANALYSIS_VERSION = 5  # bumped when the analysis computes something new (its cache is then redone)
MAX_DETS = 300  # detections per image scored, as LVIS does


def expansion_vocabulary(spec, teacher: str, clip_model=None):
    """
    The world's shapes as nouns and colours as attributes: pairs in the world's class order.
    ``clip_model``: ``teacher`` already loaded (else loaded here).
    """
    if clip_model is None:
        clip_model, _ = load_clip(teacher)
    dim = int(clip_model.text_projection.shape[1])
    nouns, colours = ",".join((*spec.shapes, *spec.concept_shapes)), ",".join(spec.colours)
    vocab = expanded_vocabulary(nouns, colours, teacher, dim, clip_model=clip_model)
    if vocab.names != category_names(spec):
        raise AssertionError(
            f"noun x attribute pairs {vocab.names[:4]}... are not the world's classes"
        )
    vocab.base_mask = dataset_vocabulary(VAL_DATASET).base_mask
    return vocab


def _val_groups(meta):
    """Category groups of val: dataset ids per APr kind; contiguous ids per accuracy group."""
    kinds = list(getattr(meta, "class_novel_kind", [""] * len(meta.thing_classes)))
    contiguous_to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    ap_groups = {
        "APr-compositional": [
            contiguous_to_id[i] for i, k in enumerate(kinds) if k == "compositional"
        ],
        "APr-concept": [contiguous_to_id[i] for i, k in enumerate(kinds) if k == "concept"],
    }
    accuracy_groups = {
        "novel": [i for i, f in enumerate(meta.class_frequency) if f == "r"],
        "compositional": [i for i, k in enumerate(kinds) if k == "compositional"],
        "concept": [i for i, k in enumerate(kinds) if k == "concept"],
        "base": [i for i, f in enumerate(meta.class_frequency) if f != "r"],
    }
    return ap_groups, accuracy_groups


def _ap_of(gt_json: str, results, iou_type: str, ap_groups: dict):
    """(LVISAPTable, its summary by frequency and by APr kind, those groups)."""
    table = LVISAPTable(gt_json, results, iou_type, max_dets=MAX_DETS)
    groups = {**table.frequency_groups(), **ap_groups}
    return table, table.summary(table.category_ap(), groups), groups


def _model_ap(model_cfgs: list, gt_json: str, ap_groups: dict):
    """Each model's AP by group (segm and bbox), its segm tables and the groups."""
    ap, tables, groups = {}, {}, None
    for key, _, cfg in model_cfgs:
        results = os.path.join(
            cfg.OUTPUT_DIR, "inference", VAL_DATASET, "lvis_instances_results.json"
        )
        ap[key] = {}
        for iou_type in ("segm", "bbox"):
            table, ap[key][iou_type], groups = _ap_of(gt_json, results, iou_type, ap_groups)
            if iou_type == "segm":
                tables[key] = table
    return ap, tables, groups


def _clip_on_crops_ap(teacher, text, rpn_cfg, dicts, detections_per_image, meta, groups) -> dict:
    """
    Box AP of the teacher classifying the crops of the base RPN's proposals (``text``:
    [C, D] val embeddings; ``meta``: val's metadata; ``groups``: the APr kinds).
    """
    crops = clip_on_crops_detections(
        teacher,
        text,
        RPNProposals(rpn_cfg),
        dicts,
        detections_per_image=detections_per_image,
        progress=False,
    )
    to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    return _ap_of(meta.json_file, lvis_results(crops, to_id), "bbox", groups)[1]


def _vild_models(model_cfgs: list) -> list:
    """(key, cfg, the trained model in eval mode) of each ViLD detector, built once."""
    models = []
    for key, _, cfg in model_cfgs:
        if cfg.MODEL.META_ARCHITECTURE != "ViLDRCNN":
            continue
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        models.append((key, cfg, model))
    return models


def _head_accuracies(models: list, dicts: list, text, accuracy_groups: dict) -> dict:
    """Each ViLD head's top-1 accuracy on val's ground-truth boxes, per group."""
    heads = {}
    for key, cfg, model in models:
        with torch.no_grad():
            heads[key] = head_accuracy(cfg, model, dicts, text, accuracy_groups)
    return heads


def _distillation_fits(run: PipelineRun, models: list, text) -> dict:
    """Each distilled model's fit to the teacher on its training regions, and its probe's."""
    dicts = DatasetCatalog.get(TRAIN_DATASET)[: run.size.fit_images]
    store = RegionStore(run.store)
    fits, probes = {}, []  # models on the same frozen features share one probe
    for key, cfg, model in models:
        if cfg.MODEL.VILD.IMAGE_LOSS_WEIGHT > 0:
            fits[key] = distillation_fit(
                cfg, model, dicts, store, text, probes, epochs=run.size.probe_epochs, seed=run.seed
            )
    return fits


def _expansion_ap(run: PipelineRun, models: list, gt_json: str, teacher) -> dict:
    """
    Mask AP of each ViLD model with the 48 classes as shapes x colours (their vocabulary is
    left set to it). ``teacher``: the loaded CLIP of ``run.teacher``.
    """
    world = spec_from_json(
        os.path.join(os.path.dirname(os.path.dirname(gt_json)), "annotations", "train.json")
    )
    vocab = expansion_vocabulary(world, run.teacher, teacher)
    expansion = {}
    for key, cfg, model in models:
        model.set_vocabulary(vocab.embeddings, vocab.base_mask, vocab.attribute_embeddings)
        evaluator = build_evaluator(cfg, VAL_DATASET, run.path("expansion", key))
        # read here: in the analysis's spawned processes a loader worker is spawned too, and
        # takes longer to start (importing detectron2 again) than the 100 images take to read
        loader = build_detection_test_loader(cfg, VAL_DATASET, num_workers=0)
        # the evaluator's tables (we print ours), and lvis' "Assuming user provided the results
        # in correct format" (they are ours)
        with contextlib.redirect_stdout(io.StringIO()), quiet_logger("lvis.results"):
            expansion[key] = dict(inference_on_dataset(model, loader, evaluator)["segm"])
    return expansion


def _cached(run: PipelineRun, model_cfgs: list, rpn_cfg):
    """(the cache's key, the cached analysis if it has that key, else None)."""
    inputs = fingerprint(
        [run.teacher, run.text, rpn_cfg.MODEL.WEIGHTS]
        + [cfg.MODEL.WEIGHTS for _, _, cfg in model_cfgs],
        ROOT,
    ) + [run.size.bootstrap_samples, run.seed, ANALYSIS_VERSION]
    cache = run.path("analysis.json")
    if os.path.isfile(cache):
        with open(cache) as f:
            cached = json.load(f)
        if cached.get("inputs") == inputs:
            return inputs, cached
    return inputs, None


def _load_teacher(run: PipelineRun):
    """(the teacher CLIP, its [C, D] text embeddings of the world's categories)."""
    teacher, _ = load_clip(run.teacher, device=run.device)
    text = load_text_embeddings(
        run.text,
        embed_dim=teacher.text_projection.shape[1],
        config_key="MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
    )
    return teacher, text


def _crops_heads_and_fits(run: PipelineRun, model_cfgs: list, rpn_cfg) -> dict:
    """CLIP on cropped regions, the heads' top-1 on val boxes and the distillation fits."""
    t0 = time.time()
    dicts = DatasetCatalog.get(VAL_DATASET)  # also sets the metadata read below
    meta = MetadataCatalog.get(VAL_DATASET)
    ap_groups, accuracy_groups = _val_groups(meta)
    teacher, text = _load_teacher(run)
    per_image = model_cfgs[0][2].TEST.DETECTIONS_PER_IMAGE
    crops = _clip_on_crops_ap(teacher, text, rpn_cfg, dicts, per_image, meta, ap_groups)
    models = _vild_models(model_cfgs)
    return {
        "clip_on_crops": {"bbox": crops},
        "head_accuracy": _head_accuracies(models, dicts, text, accuracy_groups),
        "distillation_fit": _distillation_fits(run, models, text),
        "seconds": time.time() - t0,
    }


def _expansion(run: PipelineRun, model_cfgs: list) -> dict:
    """Systematic expansion: each ViLD model's mask AP with the classes as shapes x colours."""
    t0 = time.time()
    DatasetCatalog.get(VAL_DATASET)  # sets the metadata read below
    teacher, _ = load_clip(run.teacher, device=run.device)
    models = _vild_models(model_cfgs)
    expansion = _expansion_ap(run, models, MetadataCatalog.get(VAL_DATASET).json_file, teacher)
    return {"expansion": expansion, "seconds": time.time() - t0}


def analyse(run: PipelineRun, model_cfgs: list, rpn_cfg) -> dict:
    """The analysis of ``model_cfgs`` ((key, title, cfg) of the trained detectors)."""
    inputs, cached = _cached(run, model_cfgs, rpn_cfg)
    if cached is not None:
        print("\n== analysis: up to date, skipped")
        return cached
    print("\n== analysis", flush=True)
    t0 = time.time()
    samples = run.size.bootstrap_samples

    def ap_and_intervals():  # from the LVIS results files: here, beside the two parts
        DatasetCatalog.get(VAL_DATASET)  # sets the metadata read below
        meta = MetadataCatalog.get(VAL_DATASET)
        ap, tables, groups = _model_ap(model_cfgs, meta.json_file, _val_groups(meta)[0])
        intervals = bootstrap_differences(
            tables, CLAIM_COMPARISONS, groups, num_samples=samples, seed=run.seed
        )
        return ap, intervals, time.time() - t0

    parts = [(_crops_heads_and_fits, (run, model_cfgs, rpn_cfg)), (_expansion, (run, model_cfgs))]
    processes = run.jobs if run.device == "cpu" else 1
    (scored, expansion), (ap, intervals, seconds) = side_by_side(parts, ap_and_intervals, processes)
    print(f"   AP per kind of novel category, bootstrap of {samples} resamples ({seconds:.0f}s)")
    print(
        "   CLIP on cropped regions, heads' top-1 accuracy, distillation fit and its probe"
        f" ({scored.pop('seconds'):.0f}s)"
    )
    print(f"   systematic expansion ({expansion.pop('seconds'):.0f}s)", flush=True)
    result = {
        "inputs": inputs,
        "ap": ap,
        **scored,
        "intervals": intervals,
        **expansion,
        "seconds": time.time() - t0,
    }
    atomic_write_json(run.path("analysis.json"), result)
    return result
