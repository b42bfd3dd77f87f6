"""The CLIP teacher's tools: prompt-ensembled text embeddings and batched region crops."""

import json
import os
import subprocess
import sys

import clip
import numpy as np
import pytest
import torch
from PIL import Image

from vild_d2.teacher import load_clip
from vild_d2.teacher.region_encoder import encode_regions, reference_region_embeddings, scale_boxes
from vild_d2.vocabulary.core import VocabularyError
from vild_d2.vocabulary.prompts import VILD_TEMPLATES, encode_vocabulary, fill_template

from .conftest import ROOT, SHARED, needs_shared


@pytest.fixture(scope="module")
def teacher(tiny_clip_checkpoint):
    return load_clip(tiny_clip_checkpoint["path"])


def _formula(model, names, templates, synonyms=None):
    rows = []
    for i, name in enumerate(names):
        variants = [name] + ([s for s in synonyms[i] if s != name] if synonyms else [])
        per = []
        for v in variants:
            for t in templates:
                e = model.encode_text(clip.tokenize([fill_template(t, v)])).float()[0]
                per.append(e / e.norm())
        m = torch.stack(per).mean(0)
        rows.append(m / m.norm())
    return torch.stack(rows)


def test_prompt_ensemble_equals_formula(teacher):
    model, _ = teacher
    names = ["apple", "red kite", "zebra"]
    with torch.no_grad():
        expected = _formula(model, names, VILD_TEMPLATES)
        got = encode_vocabulary(model, names, batch_size=50)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        assert torch.allclose(got.norm(dim=1), torch.ones(3))
        with_syn = encode_vocabulary(model, names, ["a {}."], synonyms=[["apple"], ["kite"], []])
        torch.testing.assert_close(
            with_syn,
            _formula(model, names, ["a {}."], [["apple"], ["kite"], []]),
            atol=1e-5,
            rtol=1e-4,
        )
    assert len(VILD_TEMPLATES) == 63
    assert fill_template("a photo of {article} {}.", "apple") == "a photo of an apple."
    assert fill_template("a photo of {article} {}.", "zebra") == "a photo of a zebra."


def test_vocabulary_errors(teacher):
    model, _ = teacher
    with pytest.raises(VocabularyError, match="empty"):
        encode_vocabulary(model, [])
    with pytest.raises(VocabularyError, match="classes 0 and 2 have the same name 'Fire hydrant'"):
        encode_vocabulary(model, ["fire_hydrant", "cat", "Fire hydrant"])


def test_names_longer_than_the_context_are_refused_not_cut(teacher):
    """Cut to 77 tokens, two long names that differ at their end got identical embeddings."""
    model, _ = teacher
    long = "a very " + "very " * 70 + "small red kite"
    with pytest.raises(VocabularyError, match=r"2 class names are too long .* context of 77"):
        encode_vocabulary(model, ["cat", long, long.replace("kite", "boat")])
    assert encode_vocabulary(model, ["a " + "very " * 40 + "small kite"]).shape[0] == 1


def test_text_tool_writes_dataset_order(tiny_lvis, tiny_clip_checkpoint, tmp_path, teacher):
    out = tmp_path / "vocab.npy"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "precompute_text_embeddings.py"),
            "--teacher",
            tiny_clip_checkpoint["path"],
            "--json",
            tiny_lvis["json"]["train"],
            "--single-template",
            "--output",
            str(out),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    emb = np.load(out)
    meta = json.loads((tmp_path / "vocab.json").read_text())
    with open(tiny_lvis["json"]["train"]) as f:
        names = [c["name"] for c in sorted(json.load(f)["categories"], key=lambda c: c["id"])]
    assert meta["class_names"] == names and emb.shape == (48, 32)
    with torch.no_grad():
        expected = encode_vocabulary(teacher[0], names, ["a photo of {article} {}."])
    np.testing.assert_allclose(emb, expected.numpy(), atol=1e-5)
    bad = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "precompute_text_embeddings.py"),
            "--teacher",
            tiny_clip_checkpoint["path"],
            "--names",
            "cat,dog,cat",
            "--output",
            str(tmp_path / "bad.npy"),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "classes 0 and 2 have the same name 'cat'" in bad.stderr
    assert not (tmp_path / "bad.npy").exists()


def test_scaled_boxes_are_centred_and_clipped():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 40.0, 10.0]])
    out = scale_boxes(boxes, 1.5, (100, 100))
    torch.testing.assert_close(
        out[0], torch.tensor([5.0, 10.0, 35.0, 70.0])
    )  # centre (20, 40) kept
    torch.testing.assert_close(out[1], torch.tensor([0.0, 0.0, 50.0, 12.5]))  # clipped at 0


def _check_batched_matches_reference(model, preprocess, pil, boxes):
    image = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    for scales in ((1.0,), (1.5,), (1.0, 1.5)):
        batched = encode_regions(model, image, torch.as_tensor(boxes, dtype=torch.float32), scales)
        reference = reference_region_embeddings(model, preprocess, pil, boxes, scales)
        cos = (batched * reference).sum(dim=1)
        assert cos.min() >= 0.99, (scales, cos)


def test_batched_regions_match_reference_on_generated_images(tiny_lvis, teacher):
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    model, preprocess = teacher
    d = DatasetCatalog.get(tiny_lvis["names"]["train"])[0]
    pil = Image.open(d["file_name"]).convert("RGB")
    boxes = np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
    )
    _check_batched_matches_reference(model, preprocess, pil, boxes)


@needs_shared
def test_batched_regions_match_reference_on_real_images(teacher):
    model, preprocess = teacher
    root = os.path.join(SHARED, "coco_tiny")
    with open(os.path.join(root, "annotations", "instances_train2017.json")) as f:
        data = json.load(f)
    for img in data["images"][:3]:
        anns = [
            a
            for a in data["annotations"]
            if a["image_id"] == img["id"] and a["bbox"][2] >= 2 and a["bbox"][3] >= 2
        ]
        boxes = np.array(
            [
                [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ]
                for a in anns
            ]
        )
        pil = Image.open(os.path.join(root, "train2017", img["file_name"])).convert("RGB")
        _check_batched_matches_reference(model, preprocess, pil, boxes)


# ---- the precompute loop ------------------------------------------------------------------


def _gt_proposals(d, image):
    """Ground-truth boxes plus one box outside the image and one of zero area."""
    from detectron2.structures import BoxMode

    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
    h, w = image.shape[:2]
    return np.array(boxes + [[w - 5, h - 5, w + 20, h + 20], [3, 3, 3, 9]], dtype=np.float32)


def test_precompute_shard_resumes_and_counts(tiny_lvis, teacher, tmp_path):
    from detectron2.data import DatasetCatalog

    from vild_d2.data.region_store import RegionStore, RegionStoreError, finalize_region_store
    from vild_d2.teacher.precompute import precompute_shard

    model, _ = teacher
    dicts = DatasetCatalog.get(tiny_lvis["names"]["train"])
    full = str(tmp_path / "full")
    stats = precompute_shard(dicts, _gt_proposals, model, full, teacher_name="tiny", progress=False)
    n_gt = sum(len(d["annotations"]) for d in dicts)
    assert stats["images"] == 3 and stats["regions"] == n_gt + 3  # the clipped corner box stays
    assert stats["boxes_clipped"] == 3 and stats["boxes_dropped"] == 3  # zero-area boxes skipped
    finalize_region_store(full)

    resumed = str(tmp_path / "resumed")  # first a run over one image, then the whole set
    precompute_shard(dicts[:1], _gt_proposals, model, resumed, teacher_name="tiny", progress=False)
    again = precompute_shard(
        dicts, _gt_proposals, model, resumed, teacher_name="tiny", progress=False
    )
    assert again["already_done"] == 1 and again["images"] == 2
    finalize_region_store(resumed)
    a, b = RegionStore(full), RegionStore(resumed)
    for d in dicts:
        np.testing.assert_array_equal(
            a.get(d["image_id"]).embeddings, b.get(d["image_id"]).embeddings
        )
        np.testing.assert_array_equal(a.get(d["image_id"]).boxes, b.get(d["image_id"]).boxes)

    other = load_clip_with_dim(tmp_path, 64)
    with pytest.raises(RegionStoreError, match="embed_dim = 32, but this run has embed_dim = 64"):
        precompute_shard(dicts, _gt_proposals, other, full, teacher_name="tiny", progress=False)
    broken = [dict(dicts[0], file_name=str(tmp_path / "missing.png"), image_id=999)]
    with pytest.raises(RuntimeError, match=f"image id 999: cannot read {tmp_path}/missing.png"):
        precompute_shard(
            broken, _gt_proposals, model, str(tmp_path / "b"), teacher_name="tiny", progress=False
        )


def load_clip_with_dim(tmp_path, dim):
    from vild_d2.teacher import build_clip, save_clip_checkpoint

    from .conftest import TINY_CLIP_SHAPE

    path = str(tmp_path / f"clip{dim}.pt")
    save_clip_checkpoint(build_clip(seed=1, **dict(TINY_CLIP_SHAPE, embed_dim=dim)), path)
    return load_clip(path)[0]


def test_a_long_vocabulary_shows_progress(teacher, capsys):
    """1,500 custom words ran 13 minutes without a word."""
    model, _ = teacher
    encode_vocabulary(model, ["cat", "dog"])
    assert "text prompts" not in capsys.readouterr().err
    encode_vocabulary(model, [f"thing {k}" for k in range(70)], batch_size=1024)  # 4,410 prompts
    err = capsys.readouterr().err
    assert "text prompts" in err and "5/5" in err
