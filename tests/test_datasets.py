"""The generated LVIS-format dataset and its loader/registration."""

import json

import numpy as np
import pytest
from lvis import LVIS

from vild_d2.data.datasets import ShapesWorldSpec, generate_shapes_world, load_lvis_format_json
from vild_d2.data.datasets.lvis_format import DatasetFormatError


def test_lvis_api_reads_generated_json(tiny_lvis):
    for split in ("train", "val"):
        api = LVIS(tiny_lvis["json"][split])
        assert len(api.get_img_ids()) == getattr(tiny_lvis["spec"], f"num_{split}")
        assert len(api.get_ann_ids()) > 0
        cats = api.load_cats(None)
        assert {c["frequency"] for c in cats} == {"r", "c", "f"}
        for img in api.load_imgs(None):
            for key in ("neg_category_ids", "not_exhaustive_category_ids", "height", "width"):
                assert key in img
        for ann in api.load_anns(None):
            # The polygon mask lies inside the box and has the stated area.
            m = api.ann_to_mask(ann)
            ys, xs = np.nonzero(m)
            x, y, w, h = ann["bbox"]
            assert xs.min() >= x - 1 and xs.max() <= x + w + 1
            assert ys.min() >= y - 1 and ys.max() <= y + h + 1
            assert abs(m.sum() - ann["area"]) / ann["area"] < 0.15


def test_generation_is_deterministic(tmp_path):
    spec = ShapesWorldSpec(seed=3, num_train=2, num_val=1, image_size=64, object_size=(8, 16))
    a = generate_shapes_world(str(tmp_path / "a"), spec)
    b = generate_shapes_world(str(tmp_path / "b"), spec)
    assert json.load(open(a["train"])) == json.load(open(b["train"]))
    assert (tmp_path / "a/train/000001.png").read_bytes() == (tmp_path / "b/train/000001.png").read_bytes()


def test_dataset_catalog(tiny_lvis):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = tiny_lvis["names"]["train"]
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3
    meta = MetadataCatalog.get(name)
    assert len(meta.thing_classes) == 36 and meta.thing_classes[0] == "red circle"
    assert len(meta.class_frequency) == 36
    for d in dicts:
        for a in d["annotations"]:
            assert 0 <= a["category_id"] < 36
            assert len(a["segmentation"][0]) >= 6


def _write(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_loader_errors_name_file_and_id(tmp_path, tiny_lvis):
    good = json.load(open(tiny_lvis["json"]["train"]))
    bad = dict(good, annotations=[dict(good["annotations"][0], category_id=999)])
    path = _write(tmp_path, bad)
    with pytest.raises(DatasetFormatError, match=r"bad\.json.*id=1 has category_id=999"):
        load_lvis_format_json(path, str(tmp_path))
    bad = dict(good, annotations=[dict(good["annotations"][0], image_id=777)])
    with pytest.raises(DatasetFormatError, match="image_id=777"):
        load_lvis_format_json(_write(tmp_path, bad), str(tmp_path))
    bad = dict(good, categories=[{"id": 1, "name": "x"}])
    with pytest.raises(DatasetFormatError, match="category id=1 lacks \\['frequency'\\]"):
        load_lvis_format_json(_write(tmp_path, bad), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_lvis_format_json(str(tmp_path / "nowhere.json"), str(tmp_path))
