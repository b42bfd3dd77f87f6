"""The generated LVIS-format dataset and its loader/registration."""

import json

import numpy as np
import pytest
from lvis import LVIS

from vild_d2.data.datasets import load_lvis_format_json
from vild_d2.data.datasets.lvis_format import DatasetFormatError
from vild_d2.world.spec import ShapesWorldSpec
from vild_d2.world.splits import generate_shapes_world


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
    assert (tmp_path / "a/train/000001.png").read_bytes() == (
        tmp_path / "b/train/000001.png"
    ).read_bytes()


def test_dataset_catalog(tiny_lvis):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = tiny_lvis["names"]["train"]
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3
    meta = MetadataCatalog.get(name)
    assert len(meta.thing_classes) == 48 and meta.thing_classes[0] == "red circle"
    assert len(meta.class_frequency) == 48
    for d in dicts:
        for a in d["annotations"]:
            assert 0 <= a["category_id"] < 48
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
    # two images or two categories with one id: they used to load, the second taking the
    # first one's annotations (or its class: 49 names for 48 ids)
    twin = dict(good["images"][1], id=good["images"][0]["id"])
    bad = dict(good, images=good["images"] + [twin])
    with pytest.raises(DatasetFormatError, match=rf"bad\.json: 1 image ids .*\({twin['id']}\)"):
        load_lvis_format_json(_write(tmp_path, bad), str(tmp_path))
    cats = good["categories"]
    bad = dict(good, categories=cats + [dict(cats[0], name="another name")])
    with pytest.raises(DatasetFormatError, match=rf"1 category ids .*\({cats[0]['id']}\)"):
        load_lvis_format_json(_write(tmp_path, bad), str(tmp_path))
    # truncated or garbage JSON: the file named, one line
    text = open(tiny_lvis["json"]["train"]).read()
    for content in (text[: len(text) // 2], "garbage", "[1, 2]"):
        (tmp_path / "broken.json").write_text(content)
        with pytest.raises(
            DatasetFormatError, match=r"broken\.json: (not valid JSON|holds a JSON list)"
        ):
            load_lvis_format_json(str(tmp_path / "broken.json"), str(tmp_path))
    # boxes with negative or zero width/height would be flipped to the wrong side by detectron2
    for box in ([10, 10, -5, 8], [10, 10, 5, 0], [10, 10, float("nan"), 3], [1, 2, 3]):
        bad = dict(good, annotations=[dict(good["annotations"][0], bbox=box)])
        with pytest.raises(
            DatasetFormatError, match=r"bad\.json.*id=1 has bbox.*width and height > 0"
        ):
            load_lvis_format_json(_write(tmp_path, bad), str(tmp_path))
    # an RLE segmentation (crowd converted from COCO) is refused, not taken for a polygon
    rle = {"size": [96, 96], "counts": "a1b2"}
    bad = dict(good, annotations=[dict(good["annotations"][0], segmentation=rle)])
    with pytest.raises(DatasetFormatError, match=r"id=1 has an RLE segmentation"):
        load_lvis_format_json(_write(tmp_path, bad), str(tmp_path))


@pytest.fixture(scope="module")
def long_tail_world(tmp_path_factory):
    spec = ShapesWorldSpec(seed=5, num_train=150, num_val=60, image_size=64, object_size=(8, 20))
    paths = generate_shapes_world(str(tmp_path_factory.mktemp("long_tail")), spec)
    return spec, {k: json.load(open(v)) for k, v in paths.items()}, paths


def test_rare_categories_are_the_designed_novel_ones_of_two_kinds(long_tail_world):
    from vild_d2.world.spec import category_names, concept_novel_ids, designed_novel_ids

    spec, data, _ = long_tail_world
    names = category_names(spec)
    compositional = {names[i] for i in designed_novel_ids(spec)}
    concept = {names[i] for i in concept_novel_ids(spec)}
    assert len(compositional) == spec.num_novel == 10
    assert (
        concept == {f"{c} {s}" for s in spec.concept_shapes for c in spec.colours}
        and len(concept) == 12
    )
    cats = data["train"]["categories"]
    assert {c["name"] for c in cats if c["frequency"] == "r"} == compositional | concept
    assert {c["name"] for c in cats if c["novel_kind"] == "concept"} == concept
    assert {c["name"] for c in cats if c["novel_kind"] == "compositional"} == compositional
    base = set(names) - compositional - concept
    assert {n.split(" ")[0] for n in base} == set(spec.colours)  # compositional novelty:
    assert {n.split(" ")[1] for n in base} == set(spec.shapes)  # every part is seen in base
    assert not {n.split(" ")[1] for n in base} & set(
        spec.concept_shapes
    )  # concepts: no base category
    by_id = {c["id"]: c["name"] for c in cats}
    train_images = {}
    for a in data["train"]["annotations"]:
        train_images.setdefault(by_id[a["category_id"]], set()).add(a["image_id"])
    lo, hi = spec.novel_train_images
    for n in compositional | concept:  # annotated in a few training images, like LVIS's rare
        assert len(train_images.get(n, ())) <= hi
    assert (
        np.median([len(train_images.get(n, ())) for n in base]) > hi
    )  # base categories are not rare
    # concept objects also appear unannotated, listed as not exhaustively annotated
    unannotated = {}
    for im in data["train"]["images"]:
        for c in im["not_exhaustive_category_ids"]:
            unannotated[by_id[c]] = unannotated.get(by_id[c], 0) + 1
    assert (
        set(unannotated) <= concept
        and sum(unannotated.values())
        >= len(concept) * spec.concept_unannotated_share[0] * spec.num_train * 0.8
    )
    val_names = {by_id[a["category_id"]] for a in data["val"]["annotations"]}
    assert (
        len((compositional | concept) & val_names) >= 0.9 * 22
    )  # val is uniform: novel categories are there
    assert all(
        not im["not_exhaustive_category_ids"] for im in data["val"]["images"]
    )  # val is exhaustive


def test_occluded_masks_are_the_visible_parts(long_tail_world):
    _, _, paths = long_tail_world
    api = LVIS(paths["train"])
    split_parts, checked = 0, 0
    for image_id in api.get_img_ids()[:60]:
        anns = api.load_anns(api.get_ann_ids(img_ids=[image_id]))
        masks = np.stack([api.ann_to_mask(a) for a in anns]).astype(np.int32)
        # visible parts do not overlap (up to rasterising shared edges)
        assert (masks.sum(0) > 1).sum() <= 0.02 * masks.sum() + 4 * len(anns)
        split_parts += sum(len(a["segmentation"]) > 1 for a in anns)
        checked += len(anns)
    assert split_parts > 0 and checked > 100  # occlusion happens and can split an object


def test_no_occlusion_option(tmp_path):
    spec = ShapesWorldSpec(
        seed=2, num_train=20, num_val=1, image_size=64, object_size=(8, 16), max_occlusion=0
    )
    api = LVIS(generate_shapes_world(str(tmp_path), spec)["train"])
    for image_id in api.get_img_ids():
        anns = api.load_anns(api.get_ann_ids(img_ids=[image_id]))
        if not anns:  # only unannotated (concept) objects found a place
            continue
        assert all(len(a["segmentation"]) == 1 for a in anns)
        masks = np.stack([api.ann_to_mask(a) for a in anns]).astype(np.int32)
        assert (masks.sum(0) > 1).sum() == 0


def test_spec_of_an_older_world_reads_with_its_version(tmp_path):
    """A v3 world's json (its spec has concept_unannotated_images, which v4 replaced)
    reads as a spec of version 3, so the pipeline reports it as another world instead of
    failing on the unknown key."""
    from dataclasses import asdict

    from vild_d2.world.spec import spec_from_json

    old = asdict(ShapesWorldSpec(num_train=400))
    del old["concept_unannotated_share"]
    old.update(concept_unannotated_images=[8, 14], version=3)
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"info": {"spec": old}}))
    spec = spec_from_json(str(path))
    assert spec.version == 3 and spec.num_train == 400
    assert asdict(spec) != asdict(ShapesWorldSpec(num_train=400))
