"""The distillation-fit diagnostics (vild_d2.evaluation.distillation_fit) on known numbers."""

import pytest
import torch
import torch.nn.functional as F

from vild_d2.evaluation.distillation_fit import DistilledRegions, fit_metrics, probe_fit


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_fit_metrics_on_hand_computed_numbers():
    text = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    teacher = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0])
    student = _unit([1, 0, 0], [0.9, 0.1, 0], [0, 0, 1], [0, 1, 0])
    fit = fit_metrics(student, teacher, text)
    # nearest classes: teacher 0,1,2,0; student 0,0,2,1 -> 2 of 4 agree
    assert fit["top1_agreement"] == pytest.approx(50.0)
    row1 = (student[1] - teacher[1]).abs().sum()  # the only other non-zero rows: 1 and 3 (= 2)
    assert fit["l1"] == pytest.approx(float(row1 + 2) / 4, rel=1e-6)
    same = fit_metrics(teacher, teacher, text)
    assert same == {"l1": 0.0, "top1_agreement": 100.0}


def _regions(n, generator, learnable=True):
    pooled = torch.randn(n, 4, 2, 2, generator=generator)
    weights = torch.randn(16, 8, generator=generator)
    targets = pooled.flatten(1) @ weights if learnable else torch.randn(n, 8, generator=generator)
    teacher = F.normalize(targets, dim=1)
    return DistilledRegions(pooled, torch.zeros_like(teacher), teacher)


def test_the_probe_reaches_a_fit_its_features_allow_and_not_one_they_do_not():
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    fit = probe_fit(_regions(768, g), text, hidden=64, epochs=60, batch_size=64, lr=3e-3)
    assert fit["train"]["top1_agreement"] > 90 and fit["train"]["l1"] < 0.6
    assert abs(fit["train"]["last_epochs_change"]) < 0.1  # converged
    assert fit["held_out"]["top1_agreement"] > 80  # a function of the features: it generalises
    # teacher embeddings unrelated to the features: memorised at best, never generalised
    noise = probe_fit(_regions(768, g, learnable=False), text, hidden=64, epochs=60, batch_size=64)
    assert noise["held_out"]["top1_agreement"] < 40 and noise["held_out"]["l1"] > 1.5


def test_models_on_the_same_features_share_one_probe(monkeypatch):
    from vild_d2.evaluation import distillation_fit as module

    g = torch.Generator().manual_seed(1)
    text = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    same, other = _regions(96, g), _regions(96, g)
    by_model = {"a": same, "b": DistilledRegions(same.pooled.clone(), same.teacher, same.teacher)}
    by_model["c"] = other
    monkeypatch.setattr(module, "distilled_regions", lambda cfg, model, *a: by_model[model])
    probes = []
    monkeypatch.setattr(module, "probe_fit", lambda regions, *a, **k: probes.append(regions) or {})
    cfg = type("Cfg", (), {})()
    cfg.MODEL = type("M", (), {"VILD": type("V", (), {"NUM_DISTILL_REGIONS": 8})})
    known = []
    fits = {m: module.distillation_fit(cfg, m, [], None, text, known) for m in ("a", "b", "c")}
    assert [p is r for p, r in zip(probes, (same, other))] == [True, True]  # b reused a's
    assert fits["b"]["probe"] is fits["a"]["probe"] and len(known) == 2
    # the student's own fit is still its own: b's student equals its teacher
    assert fits["b"]["student"]["top1_agreement"] == 100.0
    assert fits["a"]["student"]["top1_agreement"] < 100.0
