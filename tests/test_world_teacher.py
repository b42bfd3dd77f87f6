"""The shapes world's CLIP teacher: contrastive training on crops, saved and loaded as CLIP."""

import json
import os

import torch
from torchvision.ops import box_iou

from vild_d2.world.teacher_training import (
    background_boxes,
    jitter_boxes,
    train_clip_on_crops,
    zero_shot_accuracy,
)

from .conftest import ROOT


def test_jitter_stays_within_its_ranges():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0]]).repeat(500, 1)
    out = jitter_boxes(boxes, torch.Generator().manual_seed(0), shift=0.1, scale=(0.8, 1.25))
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    assert (w >= 40 * 0.8 - 1e-4).all() and (w <= 40 * 1.25 + 1e-4).all()
    assert (h >= 20 * 0.8 - 1e-4).all() and (h <= 20 * 1.25 + 1e-4).all()
    cx = (out[:, 0] + out[:, 2]) / 2
    assert (cx - 30).abs().max() <= 4 + 1e-4 and (cx - 30).abs().max() > 2  # moved, by <= 10% of w


def test_background_boxes_hold_no_object_and_stay_in_the_image():
    gen = torch.Generator().manual_seed(0)
    objects = [
        torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 20.0, 100.0, 60.0]]),
        torch.zeros(0, 4),
    ]
    owners = torch.tensor([0, 1] * 100)
    out = background_boxes(objects, owners, (12.0, 40.0), 96, 128, gen, max_iou=0.3)
    assert out.shape == (200, 4)
    assert (out[:, :2] >= 0).all() and (out[:, 2] <= 128).all() and (out[:, 3] <= 96).all()
    sides = out[:, 2:] - out[:, :2]
    assert (sides >= 12 - 1e-4).all() and (sides <= 40 + 1e-4).all()
    assert (box_iou(out[owners == 0], objects[0]).max(dim=1).values < 0.3).all()
    assert len({tuple(b) for b in out.tolist()}) == 200  # drawn, not one fixed box


def _two_colour_world():
    """32x32 images: a red square (class 0) or a blue square (class 1) on grey."""
    images, boxes, labels = [], [], []
    for i in range(16):
        img = torch.full((3, 32, 32), 128, dtype=torch.uint8)
        colour = torch.tensor([220, 40, 40] if i % 2 == 0 else [40, 80, 220], dtype=torch.uint8)
        img[:, 8:24, 8:24] = colour[:, None, None]
        images.append(img)
        boxes.append(torch.tensor([[8.0, 8.0, 24.0, 24.0]]))
        labels.append(torch.tensor([i % 2]))
    return images, boxes, labels


def test_contrastive_training_learns_and_zero_shot_uses_the_region_path(tiny_clip_checkpoint):
    from vild_d2.teacher import build_clip

    from .conftest import TINY_CLIP_SHAPE

    names = ["red square", "blue square"]
    data = _two_colour_world()
    model = build_clip(seed=0, **TINY_CLIP_SHAPE)
    history = train_clip_on_crops(
        model,
        *data,
        names,
        steps=100,
        batch_size=16,
        lr=1e-3,
        templates=["a photo of a {}.", "a {} in the picture."],
        progress=False,
    )
    assert history[-1]["loss"] < history[0]["loss"]
    after = zero_shot_accuracy(model, *data, names, templates=["a photo of a {}."], novel_ids=[1])
    assert after["accuracy"] == 100.0 and after["boxes"] == 16 and after["novel_boxes"] == 8
    assert after["accuracy_novel"] == after["accuracy_base"] == 100.0

    # with crops of no object captioned "background", that caption wins on them
    model = build_clip(seed=0, **TINY_CLIP_SHAPE)
    train_clip_on_crops(
        model,
        *data,
        names,
        steps=100,
        batch_size=16,
        lr=1e-3,
        templates=["a photo of a {}."],
        background_fraction=0.25,
        progress=False,
    )
    corners = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [24.0, 24.0, 32.0, 32.0]])] * 16
    background = zero_shot_accuracy(
        model,
        data[0],
        corners,
        [torch.tensor([2, 2])] * 16,
        [*names, "background"],
        templates=["a photo of a {}."],
    )
    assert background["accuracy"] >= 90.0


def test_channels_last_training_learns_and_leaves_contiguous_weights():
    from vild_d2.teacher import build_clip

    from .conftest import TINY_CLIP_SHAPE

    names = ["red square", "blue square"]
    data = _two_colour_world()
    model = build_clip(seed=0, **TINY_CLIP_SHAPE)
    history = train_clip_on_crops(
        model, *data, names, steps=60, batch_size=16, lr=1e-3, progress=False, channels_last=True
    )
    assert history[-1]["loss"] < history[0]["loss"]
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)  # saved as any CLIP checkpoint
    assert not model.training


def test_world_teacher_tool_writes_a_clip_checkpoint(tiny_lvis, tmp_path):
    import subprocess
    import sys

    from vild_d2.teacher import load_clip

    out = tmp_path / "teacher" / "clip_world.pt"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "train_world_teacher.py"),
            "--world",
            tiny_lvis["root"],
            "--output",
            str(out),
            "--images",
            "20",
            "--steps",
            "4",
            "--batch-size",
            "16",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, _ = load_clip(str(out))
    assert model.visual.input_resolution == 32 and model.text_projection.shape[1] == 64
    info = json.load(open(out.with_suffix(".json")))
    assert {"accuracy", "accuracy_novel", "accuracy_base", "boxes"} <= set(info["zero_shot_val"])
    assert info["zero_shot_val"]["boxes"] == sum(
        1 for _ in json.load(open(tiny_lvis["json"]["val"]))["annotations"]
    )
    assert "zero-shot accuracy on shapes_world_val objects" in proc.stdout
