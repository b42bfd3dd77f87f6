"""RoI-classification pretraining: shape or base-category labels, learns, loads into a detector."""

import json
import os
import subprocess
import sys

import pytest
import torch

from vild_d2.config import load_config
from vild_d2.world.imagenet import RoIClassifier, pretrain_roi_classifier, roi_top1_accuracy
from vild_d2.world.spec import ShapesWorldSpec, category_names, category_shapes, novel_kinds

from .conftest import ROOT
from .helpers.scripts import load_script

BASE_CONFIG = os.path.join(ROOT, "configs", "shapes_world", "base_R_18_FPN_tiny.yaml")


def _two_colour_images():
    """64x64 images: a red (class 0) or a blue (class 1) rectangle on grey, 12 of each."""
    images, boxes, labels = [], [], []
    for i in range(24):
        img = torch.full((3, 64, 64), 128, dtype=torch.uint8)
        x0, y0, w, h = 8 + (i % 5) * 4, 10 + (i % 3) * 6, 20 + (i % 4) * 4, 16 + (i % 3) * 6
        colour = [220, 40, 40] if i % 2 == 0 else [40, 80, 220]
        img[:, y0 : y0 + h, x0 : x0 + w] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
        images.append(img)
        boxes.append(torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32))
        labels.append(torch.tensor([i % 2]))
    return images, boxes, labels


def test_pretraining_learns_through_the_detectors_own_path():
    torch.manual_seed(0)
    cfg = load_config(BASE_CONFIG, ["MODEL.DEVICE", "cpu"])
    model = RoIClassifier(cfg, num_classes=2)
    images, boxes, labels = _two_colour_images()
    before = {k: v.clone() for k, v in model.detector_state_dict().items()}
    history = pretrain_roi_classifier(
        model, images, boxes, labels, steps=60, batch_size=8, crop_size=32, progress=False
    )
    assert history[-1]["train_acc"] > 0.9 and history[-1]["loss"] < history[0]["loss"]
    assert roi_top1_accuracy(model, images, boxes, labels) >= 90.0
    after = model.detector_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # labels of -1 (novel) are not scored
    skipped = [torch.full_like(lab, -1) for lab in labels]
    assert roi_top1_accuracy(model, images, boxes, skipped) == 0.0


@pytest.mark.parametrize("labels", ["shapes", "base-categories"])
def test_tool_labels_and_its_checkpoint_loads_into_the_detector(tiny_lvis, tmp_path, labels):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    out = tmp_path / "pretrain" / "model.pth"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "pretrain_world_detector.py"),
            "--world",
            tiny_lvis["root"],
            "--config-file",
            BASE_CONFIG,
            "--output",
            str(out),
            "--images",
            "12",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--crop-size",
            "32",
            "--labels",
            labels,
            "MODEL.DEVICE",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = tiny_lvis["spec"]
    info = json.load(open(out.with_suffix(".json")))
    if labels == "shapes":  # every category drawn; the classifier's classes are the 8 shapes
        assert (
            "of all 48 categories" in proc.stdout and "objects, labelled by shapes" in proc.stdout
        )
        assert info["classes"] == [*spec.shapes, *spec.concept_shapes]
    else:  # base categories only, each its own class
        base = [n for i, n in enumerate(category_names(spec)) if i not in novel_kinds(spec)]
        assert f"of base {len(base)} categories" in proc.stdout
        assert info["classes"] == base
    assert "top-1 on shapes_world_val's" in proc.stdout and info["labels"] == labels
    assert 0.0 <= info["val_top1"] <= 100.0 and info["history"][-1]["step"] == 2
    saved = torch.load(str(out), map_location="cpu")["model"]
    cfg = load_config(BASE_CONFIG, ["MODEL.DEVICE", "cpu"])
    detector = build_model(cfg)
    expected = [
        k
        for k in detector.state_dict()
        if k.startswith("backbone.") or k.startswith("roi_heads.box_head.")
    ]
    assert sorted(saved) == sorted(expected)
    DetectionCheckpointer(detector).load(str(out))
    loaded = detector.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in expected)
    assert not list(tmp_path.glob("pretrain/.*.tmp"))  # atomic writes leave nothing behind


def test_base_scenes_hold_no_novel_category():
    from vild_d2.world.objects import teacher_objects

    spec = ShapesWorldSpec(seed=0)
    base = [c for c in range(len(category_names(spec))) if c not in novel_kinds(spec)]
    _, boxes, labels = teacher_objects(spec, 30, seed=0, categories=base, stream=3)
    drawn = set(torch.cat(labels).tolist())
    assert drawn <= set(base) and len(drawn) > 10
    # the teacher's stream is unchanged by the new arguments
    a = teacher_objects(spec, 3, seed=0)[2]
    b = teacher_objects(spec, 3, seed=0, stream=2)[2]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_category_shapes_name_each_category_by_its_own_shape():
    spec = ShapesWorldSpec(seed=0)
    shapes = [*spec.shapes, *spec.concept_shapes]
    names = category_names(spec)
    assert [shapes[s] for s in category_shapes(spec)] == [n.split()[1] for n in names]
    assert set(category_shapes(spec)) == set(range(len(shapes)))


def test_tool_names_a_missing_world(tmp_path, capsys):
    main = load_script("tools/pretrain_world_detector.py").main  # in-process: no 8 s start
    argv = ["--world", str(tmp_path / "nowhere"), "--config-file", BASE_CONFIG]
    assert main(argv + ["--output", str(tmp_path / "m.pth")]) == 2
    stderr = capsys.readouterr().err
    assert "nowhere" in stderr and "not found" in stderr
    assert not (tmp_path / "m.pth").exists()
