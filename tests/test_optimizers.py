"""The trainings' optimisers: fused where torch supports it, the same update as unfused."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.solver import build_optimizer as d2_build_optimizer

from vild_d2.engine import Trainer
from vild_d2.engine.optimizers import fused_if_supported


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _three_steps(model, optimizer):
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        loss = model(torch.randn(4, 8, generator=g)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fused_sgd_takes_the_steps_of_the_default_one():
    kwargs = dict(lr=0.1, momentum=0.9, weight_decay=1e-2)
    fused_model, plain_model = _model(), _model()
    fused = fused_if_supported(torch.optim.SGD, fused_model.parameters(), **kwargs)
    assert fused.defaults["fused"]  # this torch (2.4+) has a CPU kernel
    plain = torch.optim.SGD(plain_model.parameters(), **kwargs)
    start = torch.cat([p.detach().flatten() for p in _model().parameters()])
    after_fused, after_plain = _three_steps(fused_model, fused), _three_steps(plain_model, plain)
    assert not torch.allclose(after_fused, start)  # it trained
    torch.testing.assert_close(after_fused, after_plain, rtol=1e-5, atol=1e-6)


def test_an_optimizer_without_a_fused_kernel_is_built_unfused():
    class Unfused(torch.optim.SGD):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` is not supported here")
            super().__init__(params, **kwargs)

    optimizer = fused_if_supported(Unfused, _model().parameters(), lr=0.1)
    assert type(optimizer) is Unfused and not optimizer.defaults["fused"]


@pytest.mark.parametrize("clip", [False, True], ids=["plain", "clipped"])
def test_the_trainers_optimizer_is_detectron2s_sgd_fused(clip):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.02, 0.8, 1e-3
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip
    model = _model()
    optimizer = Trainer.build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["fused"]
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.8, 1e-3)
    reference = copy.deepcopy(model)
    expected = _three_steps(reference, d2_build_optimizer(cfg, reference))
    torch.testing.assert_close(_three_steps(model, optimizer), expected, rtol=1e-5, atol=1e-6)
