"""
How well a ViLD student fits its teacher on its own distillation regions, and how well it
could: the same fit for a probe trained to convergence on the student's frozen RoI features.

The student's fit is what distillation achieved; the probe's is the ceiling its features
allow, so the gap between the two is what the box head and the schedule leave on the table
(as opposed to information the features lack). Both are measured on the regions the student
was trained on: the stored proposals of training images and the teacher's embeddings of them.

* L1: mean over regions of ||e_r - v_r||_1 (summed over D): the distillation loss unweighted.
* top-1 agreement: the fraction of regions whose nearest text embedding (over the whole
  vocabulary) is the same for the student's embedding e_r and the teacher's v_r.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.region_store import RegionStore
from ..modeling.losses import distillation_l1_loss
from .region_classification import RoIFeatureReader

__all__ = ["DistilledRegions", "distilled_regions", "fit_metrics", "probe_fit", "distillation_fit"]


@dataclass
class DistilledRegions:
    """The distillation regions of some training images, seen by a trained student."""

    pooled: torch.Tensor  # [N, C, S, S] the student's pooled RoI features (input of its heads)
    student: torch.Tensor  # [N, D] the student's region embeddings (unit norm)
    teacher: torch.Tensor  # [N, D] the teacher's stored embeddings of the same regions (unit norm)


@torch.no_grad()
def distilled_regions(
    cfg, model, dataset_dicts: Sequence[dict], store: RegionStore, num_regions: int
) -> DistilledRegions:
    """
    Args:
        cfg: the model's config (test resize, input format).
        model: a ViLDRCNN with a distillation head, in eval mode.
        dataset_dicts: training images (``file_name``, ``image_id``) that ``store`` holds.
        store: the region store the student was trained with.
        num_regions: the first ``num_regions`` regions of each image, as in training
            (MODEL.VILD.NUM_DISTILL_REGIONS).
    """
    reader = RoIFeatureReader(cfg, model)
    pooled, teacher = [], []
    for d in dataset_dicts:
        regions = store.get(d["image_id"])
        boxes = regions.boxes[:num_regions]
        if not len(boxes):
            continue
        pooled.append(reader.pool(d["file_name"], boxes))
        teacher.append(torch.from_numpy(regions.embeddings[:num_regions].astype("float32")))
    if not pooled:
        raise ValueError(f"region store {store.store_dir} holds no region of the given images")
    pooled = torch.cat(pooled)
    student = torch.cat([model.roi_heads.distilled_embeddings(p) for p in pooled.split(512)])
    return DistilledRegions(pooled.cpu(), student.cpu(), torch.cat(teacher))


def fit_metrics(
    student: torch.Tensor, teacher: torch.Tensor, text: torch.Tensor
) -> Dict[str, float]:
    """
    Args:
        student, teacher: [N, D] unit-norm region embeddings.
        text: [C, D] unit-norm text embeddings of the vocabulary.

    Returns:
        "l1": mean L1 (summed over D); "top1_agreement": % of regions whose nearest class
        is the same for both.
    """
    teacher, text = teacher.to(student), text.to(student)
    same = (student @ text.t()).argmax(1) == (teacher @ text.t()).argmax(1)
    return {
        "l1": float(distillation_l1_loss(student, teacher)),
        "top1_agreement": float(100 * same.float().mean()),
    }


def probe_fit(
    regions: DistilledRegions,
    text: torch.Tensor,
    *,
    train_fraction: float = 2 / 3,
    hidden: int = 512,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> Dict[str, Dict[str, float]]:
    """
    A 2-layer MLP (pooled features -> ``hidden`` -> D, output normalised) trained with the
    distillation L1 and Adam on the first ``train_fraction`` of ``regions`` (images in
    order, so mostly whole images).

    Returns:
        "train": its :func:`fit_metrics` on the regions it was trained on (comparable with
        the student's fit on its own training regions), plus "last_epochs_change": the
        relative change of its loss over the last 5 epochs (near 0: converged);
        "held_out": its fit on the other regions (what the features allow beyond memory).
    """
    generator = torch.Generator().manual_seed(seed)
    x, teacher = regions.pooled.flatten(1), regions.teacher
    num_train = max(1, min(len(x) - 1, int(round(len(x) * train_fraction))))
    torch.manual_seed(seed)
    probe = nn.Sequential(
        nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, teacher.shape[1])
    )
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    epoch_losses = []
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(num_train, generator=generator).split(batch_size):
            loss = distillation_l1_loss(F.normalize(probe(x[idx]), dim=1), teacher[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        epoch_losses.append(total / num_train)
    with torch.no_grad():
        fitted = torch.cat([F.normalize(probe(b), dim=1) for b in x.split(1024)])
    before = epoch_losses[max(0, len(epoch_losses) - 6)]
    train = fit_metrics(fitted[:num_train], teacher[:num_train], text)
    train["last_epochs_change"] = (epoch_losses[-1] - before) / before
    return {"train": train, "held_out": fit_metrics(fitted[num_train:], teacher[num_train:], text)}


def distillation_fit(
    cfg,
    model,
    dataset_dicts: Sequence[dict],
    store: RegionStore,
    text: torch.Tensor,
    known_probes: Optional[List[Tuple[torch.Tensor, dict]]] = None,
    **probe,
) -> Dict[str, Dict[str, float]]:
    """
    {"student": its fit, "probe": {"train", "held_out"}: the fit of a probe on its frozen
    features (:func:`probe_fit`), "regions": how many} (see the module's doc).

    ``known_probes``: a list shared between calls with the same probe options, of (pooled
    features, probe fit). Models whose pooled features are equal (heads trained on one
    detector's cached features) then share one probe, which depends on nothing else.
    """
    regions = distilled_regions(
        cfg, model, dataset_dicts, store, cfg.MODEL.VILD.NUM_DISTILL_REGIONS
    )
    known = [] if known_probes is None else known_probes
    fit = next((f for pooled, f in known if torch.equal(pooled, regions.pooled)), None)
    if fit is None:
        fit = probe_fit(regions, text, **probe)
        known.append((regions.pooled, fit))
    return {
        "student": fit_metrics(regions.student, regions.teacher, text),
        "probe": fit,
        "regions": len(regions.teacher),
    }
