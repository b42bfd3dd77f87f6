"""The separable CPU backward of roi_align (vild_d2/layers/roi_align_backward.py)."""

import pytest
import torch
from torchvision.ops import roi_align

import vild_d2  # noqa: F401  (registers the backward)
from vild_d2.layers import roi_align_backward
from vild_d2.layers.roi_align_backward import roi_align_input_grad


def _rois(generator, num, batch, height, width, scale, dtype=torch.float64):
    """RoIs in image pixels: some past the map's edges, two degenerate, one image without any."""
    size = 1 + torch.rand(num, 2, generator=generator, dtype=dtype) * 0.8 * width / scale
    corner = torch.rand(num, 2, generator=generator, dtype=dtype) * 1.3 - 0.15
    corner = corner * torch.tensor([width, height], dtype=dtype) / scale - size / 2
    boxes = torch.cat([corner, corner + size], 1)
    boxes[0, 2:] = boxes[0, :2]  # empty
    boxes[1, 2] = boxes[1, 0] - 3  # inverted
    image = torch.randint(0, batch - 1, (num, 1), generator=generator).to(dtype)
    return torch.cat([image, boxes], 1)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_gradient_is_that_of_torchvisions_forward(sampling_ratio, aligned):
    # roi_align is linear in its input: the finite differences of torchvision's own forward
    # are its exact Jacobian, which the registered backward must match
    g = torch.Generator().manual_seed(sampling_ratio + 10 * aligned)
    features = torch.randn(3, 2, 6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(g, 9, 3, 6, 9, 0.5)
    assert torch.autograd.gradcheck(
        lambda x: roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned), (features,)
    )


def test_registered_backward_is_the_separable_one_and_matches_a_direct_sum():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 5, 16, 24, generator=g, requires_grad=True)
    rois = _rois(g, 40, 3, 16, 24, 0.25, torch.float32)
    rois[:, 0] = rois[:, 0].clamp(max=1)
    grad = torch.randn(40, 5, 7, 7, generator=g)
    roi_align(features, rois, (7, 7), 0.25, 0, True).backward(grad)
    direct = roi_align_input_grad(grad, rois, 0.25, 7, 7, 2, 5, 16, 24, 0, True)
    assert torch.equal(features.grad, direct)
    # the adjoint identity <roi_align(x), g> = <x, grad_x> in float64
    x = features.detach().double()
    ours = roi_align_input_grad(grad.double(), rois.double(), 0.25, 7, 7, 2, 5, 16, 24, 0, True)
    lhs = (roi_align(x, rois.double(), (7, 7), 0.25, 0, True) * grad.double()).sum()
    assert torch.allclose(lhs, (x * ours).sum(), rtol=1e-12, atol=1e-9)


def test_bfloat16_gradients_come_back_in_bfloat16_summed_in_float32():
    g = torch.Generator().manual_seed(4)
    rois = _rois(g, 12, 2, 8, 8, 1.0, torch.float32)
    grad = torch.randn(12, 3, 7, 7, generator=g)
    full = roi_align_input_grad(grad, rois, 1.0, 7, 7, 2, 3, 8, 8, 0, True)
    half = roi_align_input_grad(grad.bfloat16(), rois, 1.0, 7, 7, 2, 3, 8, 8, 0, True)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), full, rtol=2e-2, atol=2e-2)


def test_no_rois_give_a_zero_gradient_of_the_input_shape():
    grad = torch.zeros(0, 4, 7, 7)
    out = roi_align_input_grad(grad, torch.zeros(0, 5), 0.5, 7, 7, 2, 4, 5, 6, 0, True)
    assert out.shape == (2, 4, 5, 6) and not out.any()


def test_the_environment_can_keep_torchvisions_kernel(monkeypatch):
    monkeypatch.setattr(roi_align_backward, "_LIBRARY", None)
    monkeypatch.setenv(roi_align_backward.DISABLE_ENV, "1")
    assert roi_align_backward.use_separable_roi_align_backward() is False
