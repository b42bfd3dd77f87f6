"""ViLD's scoring and losses against values computed by hand from the paper's formulas."""

import math

import pytest
import torch

from vild_d2.modeling import distillation_l1_loss, ensemble_scores, text_logits

TAU = 0.01


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_text_cross_entropy_by_hand():
    regions = [_unit([1.0, 0.2, 0.0]), _unit([0.1, 1.0, 0.3]), _unit([0.3, 0.3, 1.0])]
    classes = [_unit([1.0, 0.0, 0.1]), _unit([0.0, 1.0, 0.0]), _unit([0.5, 0.5, 0.0])]
    bg = [0.0, 0.0, 2.0]  # not unit: must be normalised before use
    labels = [0, 3, 1]  # class 0, background (index C = 3), class 1
    base = [True, True, False]  # class 2 is novel: no logit in the training softmax

    expected = 0.0
    for r, y in zip(regions, labels):
        z = [_dot(r, t) / TAU for t in classes] + [_dot(r, _unit(bg)) / TAU]
        allowed = [k for k in range(4) if k == 3 or base[k]]
        log_denominator = math.log(sum(math.exp(z[k]) for k in allowed))
        expected += -(z[y] - log_denominator)
    expected /= len(labels)

    logits = text_logits(
        torch.tensor(regions, dtype=torch.float64),
        torch.tensor(classes, dtype=torch.float64),
        torch.tensor(bg, dtype=torch.float64),
        TAU,
        torch.tensor(base),
    )
    assert logits.shape == (3, 4)
    assert torch.isinf(logits[:, 2]).all()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_official_novel_logits_stay_in_the_softmax_at_zero():
    """The official loss multiplies the logits by the 0/1 base mask: novel classes keep exp(0)."""
    regions = [_unit([1.0, 0.5, 0.0]), _unit([0.0, 1.0, 1.0])]
    classes = [_unit([1.0, 0.0, 0.0]), _unit([0.0, 1.0, 0.0]), _unit([0.0, 0.0, 1.0])]
    bg = [0.0, 0.0, 2.0]
    labels = [0, 3]
    base = [True, False, True]
    expected = 0.0
    for r, y in zip(regions, labels):
        z = [_dot(r, t) / TAU for t in classes] + [_dot(r, _unit(bg)) / TAU]
        z = [0.0 if k < 3 and not base[k] else v for k, v in enumerate(z)]  # logit x mask
        expected += -(z[y] - math.log(sum(math.exp(v) for v in z)))
    expected /= len(labels)
    logits = text_logits(
        torch.tensor(regions, dtype=torch.float64),
        torch.tensor(classes, dtype=torch.float64),
        torch.tensor(bg, dtype=torch.float64),
        TAU,
        torch.tensor(base),
        novel_logit=0.0,
    )
    assert torch.equal(logits[:, 1], torch.zeros(2, dtype=torch.float64))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_l1_distillation_by_hand():
    student = torch.tensor([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    valid = torch.tensor([True, False, True])
    # |0.6-0.8|+|0.8-0.6|+0 = 0.4 ; region 1 invalid ; 1+1+0 = 2  -> mean over 2 valid
    expected = (0.4 + 2.0) / 2
    loss = distillation_l1_loss(student, teacher, valid)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.equal(student.grad[1], torch.zeros(3))  # invalid: no contribution
    assert distillation_l1_loss(student, teacher).item() == pytest.approx(
        (0.4 + 2.0 + 2.0) / 3, abs=1e-6
    )


def test_l1_distillation_without_valid_regions_is_zero():
    student = torch.randn(2, 4, requires_grad=True)
    loss = distillation_l1_loss(student, torch.randn(2, 4), torch.tensor([False, False]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros(2, 4))


def test_ensemble_scores_by_hand():
    lam = 2 / 3
    p_text = [[0.5, 0.2, 0.1], [0.05, 0.6, 0.3]]
    p_img = [[0.3, 0.6, 0.1], [0.2, 0.2, 0.6]]
    base = [True, False, True]
    expected = [
        [
            pt**lam * pi ** (1 - lam) if b else pt ** (1 - lam) * pi**lam
            for pt, pi, b in zip(rt, ri, base)
        ]
        for rt, ri in zip(p_text, p_img)
    ]
    got = ensemble_scores(
        torch.tensor(p_text, dtype=torch.float64),
        torch.tensor(p_img, dtype=torch.float64),
        torch.tensor(base),
        lam,
    )
    for g, e in zip(got.flatten().tolist(), [x for row in expected for x in row]):
        assert g == pytest.approx(e, rel=1e-12)
