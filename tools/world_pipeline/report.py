"""
The pipeline's report: OUTPUT/results.json (every number of a run) and the markdown
tables and claim lines printed at its end.
"""

import json
import math
import os
from typing import List

from vild_d2.utils.provenance import run_provenance

from .artefacts import categories, eval_results, final_evaluation, loss_flatness
from .claims import check_claims
from .context import ROOT, PipelineRun
from .sizes import CROPS_KEY, CROPS_TITLE, MODELS, RECALL_K, TRANSFER_DATASET

__all__ = [
    "collect_results",
    "results_table",
    "ap_table",
    "claim_lines",
    "provenance_line",
]

AP_COLUMNS = ["AP", "APr", "APr-compositional", "APr-concept", "APc", "APf"]
GROUPS = ["all", "novel", "compositional", "concept", "base"]
GROUP_SUFFIX = {  # the suffix of each group's keys in the RPN's and the teacher's reports
    "all": "",
    "novel": "_novel",
    "compositional": "_compositional",
    "concept": "_concept",
    "base": "_base",
}


def _model_rows(run: PipelineRun, analysis: dict) -> List[dict]:
    rows = []
    for key, _, title, on in MODELS:
        evaluation = final_evaluation(run.path(key), "segm/AP")
        rows.append(
            {
                "key": key,
                "title": title,
                "trained_on": on,
                "ap": analysis["ap"][key],
                "loss_last_fifth": loss_flatness(run.path(key)),
                "lvis_evaluator": {
                    k: v for k, v in evaluation.items() if k.startswith(("bbox/", "segm/"))
                },
            }
        )
    return rows


def _transfer(run: PipelineRun) -> dict:
    """
    Per ViLD model: its mask AP on val (its training's final evaluation) and on the transfer
    dataset (its transfer evaluation, with the transfer vocabulary).
    """
    transfer = {}
    for key, _, _, _ in MODELS:
        if not key.startswith("vild"):
            continue  # a fixed classifier cannot take another vocabulary
        evaluations = {
            "val": final_evaluation(run.path(key), "segm/AP"),
            "transfer": eval_results(run.path("transfer", key)),
        }
        transfer[key] = {
            name: {k[len("segm/") :]: v for k, v in found.items() if k.startswith("segm/")}
            for name, found in evaluations.items()
        }
    return transfer


def collect_results(run: PipelineRun, analysis: dict, seconds: dict, total: float) -> dict:
    """Every number of the run, as OUTPUT/results.json holds them."""
    with open(os.path.splitext(run.teacher)[0] + ".json") as f:
        teacher_report = json.load(f)["zero_shot_val"]
    rpn = eval_results(run.path("rpn"))
    transfer_json = os.path.join(run.data_root, "annotations", "transfer.json")
    results = {
        "provenance": run_provenance(ROOT),
        "quick": run.quick,
        "seed": run.seed,
        "size": vars(run.size),
        "device": run.device,
        "precision": run.precision,
        "seconds": seconds,
        "total_seconds": total,
        "bootstrap_samples": run.size.bootstrap_samples,
        "models": _model_rows(run, analysis),
        "clip_on_crops": {
            "key": CROPS_KEY,
            "title": CROPS_TITLE,
            "trained_on": "(teacher)",
            "ap": analysis["clip_on_crops"],
        },
        "rpn": {
            "k": RECALL_K,
            **{k.split("/", 1)[1]: v for k, v in rpn.items() if k.startswith("proposals/")},
        },
        "teacher": teacher_report,
        "head_accuracy": analysis["head_accuracy"],
        "distillation_fit": analysis["distillation_fit"],
        "intervals": analysis["intervals"],
        "transfer": _transfer(run),
        "transfer_classes": len(categories(transfer_json)),
        "expansion": analysis["expansion"],
    }
    results["claims"] = check_claims(
        {row["key"]: row["ap"]["segm"] for row in results["models"]},
        analysis["intervals"],
        _vild_fit(analysis),
    )
    return results


def _vild_fit(analysis: dict) -> dict:
    """ViLD's numbers for claim (d): its fit to the teacher and its compositional top-1."""
    fit = analysis["distillation_fit"].get("vild", {}).get("student", {})
    head = analysis["head_accuracy"].get("vild", {}).get("head", {})
    return {**fit, "compositional_top1": head.get("compositional", float("nan"))}


def _fmt(v) -> str:
    return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.1f}"


def _row(*cells) -> str:
    return "| " + " | ".join(cells) + " |"


def ap_table(results: dict, task: str = "segm") -> List[str]:
    """The models' AP (``task``: segm or bbox; box AP with the CLIP-on-crops baseline)."""
    lines = [_row("model", "trained on", *AP_COLUMNS), "|---|---|" + "---:|" * len(AP_COLUMNS)]
    rows = results["models"] + (
        [results["clip_on_crops"]] if task == "bbox" and results.get("clip_on_crops") else []
    )
    for row in rows:
        ap = row.get("ap", {}).get(task, {})
        lines.append(_row(row["title"], row["trained_on"], *(_fmt(ap.get(c)) for c in AP_COLUMNS)))
    return lines


def _ap_tables(results: dict) -> List[str]:
    """Mask AP, then box AP with the CLIP-on-crops baseline."""
    lines = []
    for task, title in (
        ("segm", "mask AP (%), LVIS protocol, rare = novel"),
        ("bbox", "box AP (%)"),
    ):
        lines += [f"**{title}**", "", *ap_table(results, task), ""]
    return lines


def _diagnostics(results: dict) -> List[str]:
    """The RPN's recall, the teacher's and the heads' top-1 accuracy, per group."""
    rpn, k = results["rpn"], results["rpn"]["k"]
    lines = ["**diagnostics**", "", _row("diagnostic", *GROUPS), "|---|" + "---:|" * len(GROUPS)]
    for title, key in (
        (f"RPN recall@{k} (IoU 0.5), %", "R50"),
        (f"RPN AR@{k} (IoU 0.5:0.95), %", "AR"),
    ):
        lines.append(_row(title, *(_fmt(rpn.get(f"{key}{GROUP_SUFFIX[g]}@{k}")) for g in GROUPS)))
    teacher = results["teacher"]
    lines.append(
        _row(
            "teacher zero-shot top-1 on val boxes, %",
            *(_fmt(teacher.get("accuracy" + GROUP_SUFFIX[g])) for g in GROUPS),
        )
    )
    for title, head, acc in _heads(results):
        lines.append(
            _row(f"{title} {head} top-1 on val boxes, %", *(_fmt(acc.get(g)) for g in GROUPS))
        )
    return lines


def _heads(results: dict):
    """(model title, head, its accuracies) of every ViLD head, in the models' order."""
    accuracy = results.get("head_accuracy", {})
    for row in results["models"]:
        for head, acc in accuracy.get(row["key"], {}).items():
            yield row["title"], head, acc


def _heads_on_base(results: dict) -> List[str]:
    """Why novel classes win: region embeddings far from every text embedding."""
    extra = ["base, base classes only", "cosine to true class"]
    rows = [
        _row(f"{title} {head}", _fmt(acc.get("base")), *(_fmt(acc.get(e)) for e in extra))
        for title, head, acc in _heads(results)
    ]
    if not rows:
        return []
    header = _row(
        "head",
        "top-1 on base boxes, all classes, %",
        "same, base classes only, %",
        "mean cosine to the true class ×100",
    )
    return ["", header, "|---|---:|---:|---:|", *rows]


def _fit_table(results: dict) -> List[str]:
    """Each distilled model's fit to the teacher on its training regions, and the probe's."""
    fits = results.get("distillation_fit") or {}
    titles = {row["key"]: row["title"] for row in results["models"]}
    rows = []
    for key, fit in fits.items():
        cells = (fit["student"], fit["probe"]["train"], fit["probe"]["held_out"])
        rows.append(
            _row(titles[key], *(f"{c['top1_agreement']:.1f} | {c['l1']:.2f}" for c in cells))
        )
    if not rows:
        return []
    return [
        "",
        (
            f"**distillation fit** on {next(iter(fits.values()))['regions']} regions of training"
            " images (their stored proposals): top-1 agreement = % of regions whose nearest"
            " class is the teacher's; L1 = the unweighted distillation loss. The probe: an MLP"
            " trained to convergence on the student's frozen RoI features of two thirds of"
            " them, the ceiling those features allow (held out: the other third)"
        ),
        "",
        _row(
            "model",
            "student top-1, %",
            "student L1",
            "probe top-1, %",
            "probe L1",
            "probe held out top-1, %",
            "held out L1",
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def _transfer_table(results: dict) -> List[str]:
    if not results.get("transfer"):
        return []
    lines = [
        "",
        (
            f"**transfer** (mask AP, no retraining): `{TRANSFER_DATASET}`, another vocabulary"
            f" ({results.get('transfer_classes', '?')} classes: blue/red/yellow x 8 shapes;"
            " objects of the other colours are outside it), with its own embeddings; val AP:"
            " each model's own evaluation"
        ),
        "",
        _row("model", "val AP", "transfer AP", "APr", "APc", "APf"),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["models"]:
        if row["key"] not in results["transfer"]:
            continue
        val = results["transfer"][row["key"]].get("val", {})
        tr = results["transfer"][row["key"]].get("transfer", {})
        cells = (val.get("AP"), tr.get("AP"), tr.get("APr"), tr.get("APc"), tr.get("APf"))
        lines.append(_row(row["title"], *(_fmt(v) for v in cells)))
    return lines


def _expansion_table(results: dict) -> List[str]:
    if not results.get("expansion"):
        return []
    lines = [
        "",
        (
            "**systematic expansion** (mask AP on val): the 48 classes as 8 shapes x 6 colours,"
            " scored p(shape | r) p(colour | r), vs the 48 names' own embeddings"
        ),
        "",
        _row("model", "48 names: AP", "APr", "shapes x colours: AP", "APr", "APc", "APf"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["models"]:
        ex = results["expansion"].get(row["key"])
        if ex is None:
            continue
        ap = row["ap"]["segm"]
        cells = (ap.get("AP"), ap.get("APr"), *(ex.get(c) for c in ("AP", "APr", "APc", "APf")))
        lines.append(_row(row["title"], *(_fmt(v) for v in cells)))
    return lines


def results_table(results: dict) -> str:
    """Markdown tables: mask AP, box AP (with the CLIP-on-crops baseline) and diagnostics."""
    lines = _ap_tables(results) + _diagnostics(results)
    lines += _heads_on_base(results) + _fit_table(results)
    lines += _transfer_table(results) + _expansion_table(results)
    return "\n".join(lines)


def claim_lines(results: dict) -> str:
    """ViLD's claims, met or missed, and the bootstrap intervals they were decided on."""
    if results.get("quick"):
        return (
            "  (smoke run: a tiny world trained for a few iterations; its numbers mean nothing, "
            "so ViLD's claims are not checked)"
        )
    out = [
        f"  [{'met' if c['met'] else 'MISSED'}] ({c['name']}) {c['text']}: {c['detail']}"
        for c in results["claims"]
    ]
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


def provenance_line(results: dict) -> str:
    """Where and when the run ran: its commit, seed, machine, date and wall time."""
    origin = results.get("provenance") or {}
    commit = origin.get("commit") or "an unknown commit"
    minutes = results["total_seconds"] / 60
    precision = results.get("precision", "float32")  # runs before the option were float32
    num_val = results.get("size", {}).get("num_val")
    val = f" {num_val} val images," if num_val else ""
    return (
        f"{'Smoke run' if results.get('quick') else 'Run'} of {commit}, seed {results['seed']},"
        f" {precision} training,{val} {origin.get('date', 'date unknown')}, {minutes:.0f} min for"
        f" the stages (install excluded) on {origin.get('machine', 'an unrecorded machine')}"
    )
