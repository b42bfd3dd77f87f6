"""The tiling average pool (vild_d2/layers/block_avg_pool.py): torch's numbers, bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vild_d2.layers import BlockAvgPool2d, block_avg_pool2d, use_block_avg_pools
from vild_d2.world.teacher_training import WORLD_TEACHER_SHAPE

# the world teacher's kind of CLIP (a ModifiedResNet image tower), narrower
RESNET_CLIP_SHAPE = dict(
    WORLD_TEACHER_SHAPE, vision_width=16, transformer_width=64, transformer_heads=1
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape,k", [((4, 6, 16, 16), 2), ((3, 5, 7, 9), 2), ((2, 4, 9, 11), 3)])
def test_forward_and_backward_equal_avg_pool2d_bit_for_bit(dtype, channels_last, shape, k):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(shape, generator=g).mul(100).to(dtype)  # wide range: rounding shows
    x[0, 0, :2, :2] = 0.0  # ties and zeros, as after a ReLU
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    grads, outs = [], []
    for pool in (lambda t: F.avg_pool2d(t, k), lambda t: block_avg_pool2d(t, k)):
        leaf = x.detach().clone().requires_grad_()
        out = pool(leaf)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype))
        outs.append(out)
        grads.append(leaf.grad)
    assert outs[1].shape == outs[0].shape and outs[1].dtype == dtype
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])


def test_only_pools_whose_windows_tile_the_map_are_replaced():
    model = nn.Sequential(
        nn.AvgPool2d(2),
        nn.Sequential(nn.AvgPool2d(1), nn.AvgPool2d(3, stride=1)),  # overlapping: kept
        nn.AvgPool2d(2, padding=1),  # padded: kept
        nn.AvgPool2d(2, ceil_mode=True),  # ceil mode: kept
    )
    assert use_block_avg_pools(model) == 2
    assert isinstance(model[0], BlockAvgPool2d) and model[0].kernel_size == 2
    assert isinstance(model[1][0], BlockAvgPool2d) and model[1][0].kernel_size == 1
    assert type(model[1][1]) is nn.AvgPool2d and type(model[2]) is nn.AvgPool2d
    x = torch.randn(1, 2, 12, 12)
    assert torch.equal(model[1][0](x), x)  # a mean of one pixel


def test_a_teacher_trains_to_the_same_weights_with_it(monkeypatch):
    # the teacher's whole trajectory, bfloat16 autocast: any difference in any pool's
    # rounding would show in the weights after a few AdamW steps
    from vild_d2.teacher import build_clip
    from vild_d2.world import teacher_training

    from .test_world_teacher import _two_colour_world

    names, data, weights = ["red square", "blue square"], _two_colour_world(), []
    for swap in (False, True):
        if not swap:
            monkeypatch.setattr(teacher_training, "use_block_avg_pools", lambda model: 0)
        else:
            monkeypatch.undo()
        model = build_clip(seed=0, **RESNET_CLIP_SHAPE)
        teacher_training.train_clip_on_crops(
            model, *data, names, steps=8, batch_size=16, progress=False, dtype=torch.bfloat16
        )
        pools = [m for m in model.modules() if isinstance(m, (nn.AvgPool2d, BlockAvgPool2d))]
        assert pools and all(isinstance(m, BlockAvgPool2d) == swap for m in pools)
        weights.append(model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    moved = build_clip(seed=0, **RESNET_CLIP_SHAPE).state_dict()
    assert any(not torch.equal(moved[k], weights[1][k]) for k in moved)  # it trained
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
