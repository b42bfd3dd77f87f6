"""Open-vocabulary splits (LVIS v1 rare = novel, OV-COCO 48/17), the AP50 novel/base evaluator."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.structures import Boxes, BoxMode, Instances

from vild_d2.data.datasets import (
    COCO_OV_BASE,
    COCO_OV_NOVEL,
    lvis_v1_ov_metadata,
    register_coco_ov,
    register_lvis_format,
)
from vild_d2.evaluation import OpenVocabCOCOEvaluator, split_ap50
from vild_d2.vocabulary.core import dataset_vocabulary

from .conftest import SHARED, needs_shared


def test_builtin_ov_registrations():
    for name, classes, novel in [
        ("lvis_v1_train_ov", 1203, 337),
        ("lvis_v1_val", 1203, 337),
        ("coco_2017_train_ov", 65, 17),
        ("coco_2017_val_ov", 65, 17),
    ]:
        vocab = dataset_vocabulary(name)
        assert vocab.num_classes == classes and int((~vocab.base_mask).sum()) == novel, name
    meta = lvis_v1_ov_metadata()
    rare = {meta["thing_classes"][i] for i in meta["novel_class_ids"]}
    assert all(meta["class_frequency"][i] == "r" for i in meta["novel_class_ids"])
    assert len(rare) == 337 and "aerosol_can" not in rare  # a common category
    coco = MetadataCatalog.get("coco_2017_val_ov")
    assert {coco.thing_classes[i] for i in coco.novel_class_ids} == set(COCO_OV_NOVEL)
    assert not hasattr(coco, "json_file")  # the evaluator must build the 65-class ground truth


def test_lvis_format_open_vocabulary_split(tmp_path):
    """Rare categories' annotations leave the training split; every image stays."""
    from vild_d2.world.spec import ShapesWorldSpec
    from vild_d2.world.splits import generate_shapes_world

    spec = ShapesWorldSpec(seed=3, num_train=30, num_val=1, image_size=64, object_size=(10, 20))
    json_file = generate_shapes_world(str(tmp_path), spec)["train"]
    name, full_name = "test_shapes_train_ov", "test_shapes_train_full"
    for n in (name, full_name):
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    register_lvis_format(full_name, json_file, str(tmp_path))
    register_lvis_format(
        name, json_file, str(tmp_path), novel_frequencies=("r",), remove_novel_annotations=True
    )
    full = DatasetCatalog.get(full_name)
    ov = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    rare = {i for i, f in enumerate(meta.class_frequency) if f == "r"}
    assert rare and set(meta.novel_class_ids) == rare
    assert [d["image_id"] for d in ov] == [d["image_id"] for d in full]
    for d_full, d_ov in zip(full, ov):
        expected = [a for a in d_full["annotations"] if a["category_id"] not in rare]
        assert d_ov["annotations"] == expected
    assert sum(len(d["annotations"]) for d in ov) < sum(len(d["annotations"]) for d in full)


def _coco_json(path, rng):
    """A COCO-format json over the 80 COCO categories: 6 images, boxes of many classes."""
    cats = [c for c in COCO_CATEGORIES if c["isthing"]]
    images, anns = [], []
    for i in range(6):
        images.append({"id": i + 1, "file_name": f"{i + 1}.jpg", "height": 200, "width": 300})
        for j in range(8):
            x, y = float(rng.uniform(0, 200)), float(rng.uniform(0, 100))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "bbox": [x, y, 60.0, 50.0],
                    "area": 3000.0,
                    "iscrowd": 0,
                    "category_id": cats[(i * 8 + j) % 80]["id"],
                    "segmentation": [[x, y, x + 60, y, x + 60, y + 50, x, y + 50]],
                }
            )
    with open(path, "w") as f:
        json.dump(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": c["id"], "name": c["name"]} for c in cats],
            },
            f,
        )
    return {c["id"]: c["name"] for c in cats}, anns


def test_ov_coco_evaluator_reports_novel_base_all(tmp_path):
    names_by_id, anns = _coco_json(str(tmp_path / "val.json"), np.random.default_rng(0))
    name = "test_coco_ov_val_synthetic"
    if name not in DatasetCatalog.list():
        register_coco_ov(name, str(tmp_path / "val.json"), str(tmp_path), train=False)
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    novel = set(meta.novel_class_ids)
    kept = [
        a for a in anns if names_by_id[a["category_id"]] in set(COCO_OV_BASE) | set(COCO_OV_NOVEL)
    ]
    assert sum(len(d["annotations"]) for d in dicts) == len(kept) < len(anns)

    def evaluate(only_base):
        ev = OpenVocabCOCOEvaluator(name, tasks=("bbox",), output_dir=str(tmp_path / "eval"))
        ev.reset()
        for d in dicts:
            annos = [a for a in d["annotations"] if not (only_base and a["category_id"] in novel)]
            inst = Instances((d["height"], d["width"]))
            inst.pred_boxes = Boxes(
                torch.tensor(
                    [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
                ).reshape(-1, 4)
            )
            inst.scores = torch.ones(len(annos))
            inst.pred_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.long)
            ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
        return ev.evaluate()["bbox"]

    perfect = evaluate(only_base=False)
    assert perfect["AP50-novel"] == pytest.approx(100) and perfect["AP50-base"] == pytest.approx(
        100
    )
    assert perfect["AP50-all"] == pytest.approx(perfect["AP50"])
    base_only = evaluate(only_base=True)
    present = {a["category_id"] for d in dicts for a in d["annotations"]}
    n_novel, n_base = len(present & novel), len(present - novel)
    assert n_novel and n_base
    assert base_only["AP50-novel"] == pytest.approx(0) and base_only["AP50-base"] == pytest.approx(
        100
    )
    assert base_only["AP50-all"] == pytest.approx(100 * n_base / (n_base + n_novel))


def test_split_ap50_ignores_classes_without_ground_truth():
    precision = -np.ones((10, 101, 3, 4, 3))
    precision[0, :, 0, 0, -1] = 0.5
    precision[0, :, 2, 0, -1] = 1.0  # class 1 has no ground truth (-1 everywhere)
    assert split_ap50(precision, [2]) == {"AP50-novel": 100.0, "AP50-base": 50.0, "AP50-all": 75.0}


# ---- real data ----------------------------------------------------------------------------


@needs_shared
def test_split_names_match_the_standard_split_file():
    with open(os.path.join(SHARED, "coco_ovr_48_17_split.json")) as f:
        split = json.load(f)
    assert COCO_OV_BASE == split["seen48"] and COCO_OV_NOVEL == split["unseen17"]
    with open(os.path.join(SHARED, "clip_text_embeddings", "lvis_v1_train_cat_info.json")) as f:
        cat_info = json.load(f)
    meta = lvis_v1_ov_metadata()
    rare_ids = {c["id"] for c in cat_info if c["frequency"] == "r"}
    id_of = {v: k for k, v in meta["thing_dataset_id_to_contiguous_id"].items()}
    assert {id_of[i] for i in meta["novel_class_ids"]} == rare_ids


@needs_shared
@pytest.mark.parametrize("subset", ["coco128", "coco_tiny"])
def test_ov_coco_on_real_annotations(subset):
    json_file = os.path.join(SHARED, subset, "annotations", "instances_train2017.json")
    with open(json_file) as f:
        raw = json.load(f)
    coco_name = {c["id"]: c["name"] for c in raw["categories"]}
    for train in (True, False):
        name = f"test_{subset}_ov_{'train' if train else 'val'}"
        if name not in DatasetCatalog.list():
            register_coco_ov(
                name, json_file, os.path.join(SHARED, subset, "train2017"), train=train
            )
        dicts = DatasetCatalog.get(name)
        classes = MetadataCatalog.get(name).thing_classes
        allowed = set(COCO_OV_BASE) | (set() if train else set(COCO_OV_NOVEL))
        expected = sorted(
            (a["image_id"], coco_name[a["category_id"]])
            for a in raw["annotations"]
            if coco_name[a["category_id"]] in allowed
        )
        got = sorted(
            (d["image_id"], classes[a["category_id"]]) for d in dicts for a in d["annotations"]
        )
        assert got == expected and got
        assert len(dicts) == len(raw["images"])  # images without kept annotations stay
        assert all(os.path.isfile(d["file_name"]) for d in dicts)


def test_ov_coco_loader_refuses_boxes_without_area(tmp_path):
    from vild_d2.data.datasets.lvis_format import DatasetFormatError

    _, anns = _coco_json(str(tmp_path / "val.json"), np.random.default_rng(1))
    data = json.loads((tmp_path / "val.json").read_text())
    data["annotations"][5]["bbox"][2] = -12.0  # negative width: detectron2 would flip it
    (tmp_path / "val.json").write_text(json.dumps(data))
    name = "test_coco_ov_negative_box"
    if name not in DatasetCatalog.list():
        register_coco_ov(name, str(tmp_path / "val.json"), str(tmp_path), train=False)
    with pytest.raises(
        DatasetFormatError,
        match=rf"val.json: annotation id={data['annotations'][5]['id']} has bbox",
    ):
        DatasetCatalog.get(name)
