"""DistillDatasetMapper: regions follow the image's transforms, and training reads the store."""

import copy
import os

import detectron2.data.transforms as T
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from vild_d2.config import ConfigError, load_config
from vild_d2.data import (
    DistillDatasetMapper,
    RegionStore,
    RegionStoreError,
    ShardWriter,
    create_region_store,
    finalize_region_store,
    open_training_store,
    transform_regions,
)
from vild_d2.data.build import check_training_inputs

from .conftest import ROOT, SHARED, needs_shared

VILD_CONFIG = os.path.join(ROOT, "configs", "shapes_world", "vild_R_18_FPN_tiny.yaml")
D = 32


def _index_embeddings(n, dim=D):
    """Row i is the unit vector e_i: a kept embedding tells which stored region it was."""
    return np.eye(n, dim)


@pytest.fixture(scope="module")
def store(tiny_lvis, tmp_path_factory):
    """Every train image of tiny_lvis with 24 random boxes, some near the borders."""
    path = str(tmp_path_factory.mktemp("store"))
    create_region_store(path, teacher="random", embed_dim=D)
    rng = np.random.default_rng(0)
    with ShardWriter(path, 0) as w:
        for d in DatasetCatalog.get(tiny_lvis["names"]["train"]):
            h, wd = d["height"], d["width"]
            xy = rng.uniform(-10, [wd, h], (24, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(4, 50, (24, 2))], 1)
            w.add(d["image_id"], boxes, _index_embeddings(24), (h, wd))
    finalize_region_store(path)
    return path


def _lsj(size=64):
    return [T.ResizeScale(0.5, 2.0, size, size), T.FixedSizeCrop((size, size)), T.RandomFlip()]


def _check_regions_follow_annotations(mapper, d, stored, seeds):
    """
    Map ``d`` with the stored boxes as its annotations (class = region index): the kept
    regions must be exactly detectron2's transformed, non-empty annotation boxes.
    Returns the number of images in which some region was dropped.
    """
    record = copy.deepcopy(d)
    record["annotations"] = [
        {"bbox": b.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": i, "iscrowd": 0}
        for i, b in enumerate(stored.boxes)
    ]
    dropped = 0
    for seed in seeds:
        np.random.seed(seed)
        out = mapper(record)
        gt, reg = out["instances"], out["distill_regions"]
        assert reg.image_size == tuple(out["image"].shape[1:])
        kept = reg.embeddings.float().argmax(dim=1)
        assert torch.equal(kept, gt.gt_classes)  # the same regions survive, in order
        assert torch.allclose(reg.boxes.tensor, gt.gt_boxes.tensor, atol=1e-3)
        np.testing.assert_array_equal(reg.embeddings.numpy(), stored.embeddings[kept.numpy()])
        dropped += len(kept) < len(stored.boxes)
    return dropped


def test_regions_move_like_annotations(tiny_lvis, store):
    regions_store = RegionStore(store)
    mapper = DistillDatasetMapper(
        is_train=True,
        augmentations=_lsj(),
        image_format="RGB",
        use_instance_mask=False,
        region_store=regions_store,
        num_regions=1000,
        min_visible=0.0,
    )
    dropped = sum(
        _check_regions_follow_annotations(mapper, d, regions_store.get(d["image_id"]), range(6))
        for d in DatasetCatalog.get(tiny_lvis["names"]["train"])
    )
    assert dropped  # the crops did push regions out of the image


@needs_shared
def test_mapper_on_real_coco_images(tmp_path):
    """Real JPEGs (coco_tiny), a store written from their ground-truth + random boxes, LSJ."""
    from vild_d2.data.datasets import register_coco_ov

    name = "test_coco_tiny_mapper"
    subset = os.path.join(SHARED, "coco_tiny")
    if name not in DatasetCatalog.list():
        register_coco_ov(
            name,
            os.path.join(subset, "annotations", "instances_train2017.json"),
            os.path.join(subset, "train2017"),
            train=True,
        )
    dicts = DatasetCatalog.get(name)[:10]
    rng = np.random.default_rng(0)
    create_region_store(str(tmp_path), teacher="random", embed_dim=D)
    with ShardWriter(str(tmp_path), 0) as w:
        for d in dicts:
            gt = [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                for a in d["annotations"]
            ]
            xy = rng.uniform(0, [d["width"], d["height"]], (D - len(gt), 2))
            extra = np.concatenate([xy, xy + rng.uniform(8, 200, xy.shape)], 1)
            boxes = np.concatenate([np.array(gt).reshape(-1, 4), extra])[:D]
            w.add(d["image_id"], boxes, _index_embeddings(len(boxes)), (d["height"], d["width"]))
    finalize_region_store(str(tmp_path))
    store = RegionStore(str(tmp_path))
    cfg = load_config(
        VILD_CONFIG,
        [
            "INPUT.LSJ.ENABLED",
            "True",
            "INPUT.LSJ.IMAGE_SIZE",
            "320",
            "INPUT.DISTILL_MIN_VISIBLE",
            "0.0",
            "DATASETS.REGION_STORE_TRAIN",
            str(tmp_path),
        ],
    )
    full = DistillDatasetMapper(cfg, is_train=True, region_store=store)  # with masks
    out = full(dicts[0])
    assert out["image"].shape == (3, 320, 320) and out["image"].dtype == torch.uint8
    assert len(out["distill_regions"]) <= cfg.MODEL.VILD.NUM_DISTILL_REGIONS
    boxes_only = DistillDatasetMapper(
        cfg,
        is_train=True,
        region_store=store,
        use_instance_mask=False,
        recompute_boxes=False,
        num_regions=1000,
    )
    dropped = sum(
        _check_regions_follow_annotations(boxes_only, d, store.get(d["image_id"]), range(3))
        for d in dicts
    )
    assert dropped


def test_min_visible_and_cap():
    boxes = np.array([[0, 0, 10, 10], [15, 0, 25, 10], [8, 0, 28, 10], [40, 0, 50, 10]], np.float32)
    crop = T.TransformList([T.CropTransform(10, 0, 20, 10)])  # keeps x in [10, 30)
    moved, keep = transform_regions(boxes, crop, (10, 20), min_visible=0.0)
    assert keep.tolist() == [False, True, True, False]
    np.testing.assert_allclose(moved, [[5, 0, 15, 10], [0, 0, 18, 10]])
    _, keep = transform_regions(boxes, crop, (10, 20), min_visible=0.95)
    assert keep.tolist() == [False, True, False, False]  # region 2 is 90% visible


def test_cap_keeps_first_regions_and_size_check(tiny_lvis, store):
    d = DatasetCatalog.get(tiny_lvis["names"]["train"])[0]
    mapper = DistillDatasetMapper(
        is_train=True,
        augmentations=[],
        image_format="RGB",
        use_instance_mask=False,
        region_store=store,
        num_regions=3,
        min_visible=0.0,
    )
    out = mapper(d)
    kept = out["distill_regions"].embeddings.float().argmax(dim=1).tolist()
    assert len(kept) == 3 and kept == sorted(kept)
    assert out["distill_regions"].embeddings.dtype == torch.float16
    assert "distill_regions" not in DistillDatasetMapper(
        is_train=False, augmentations=[], image_format="RGB", region_store=store
    )(d)


def test_store_of_other_images_is_refused(tiny_lvis, tmp_path):
    d = DatasetCatalog.get(tiny_lvis["names"]["train"])[0]
    create_region_store(str(tmp_path), teacher="t", embed_dim=D)
    with ShardWriter(str(tmp_path), 0) as w:
        w.add(d["image_id"], np.zeros((1, 4)), np.eye(1, D), (d["height"] * 2, d["width"]))
    finalize_region_store(str(tmp_path))
    mapper = DistillDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", region_store=str(tmp_path)
    )
    with pytest.raises(
        RegionStoreError,
        match=rf"image id {d['image_id']} \(.*\) is 96x96 in the dataset but 192x96 in the store",
    ):
        mapper(d)


def _vild_cfg(tiny_lvis, store, vocab, *extra):
    return load_config(
        VILD_CONFIG,
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.VILD.EMBED_DIM",
            str(D),
            "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
            vocab,
            "DATASETS.TRAIN",
            f"('{tiny_lvis['names']['train']}',)",
            "DATASETS.TEST",
            f"('{tiny_lvis['names']['val']}',)",
            "DATASETS.REGION_STORE_TRAIN",
            store,
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.MIN_SIZE_TRAIN",
            "(96,)",
            "INPUT.MAX_SIZE_TRAIN",
            "96",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vocab") / "vocab.npy")
    np.save(path, np.random.default_rng(0).normal(size=(48, D)).astype(np.float32))
    return path


def test_trainer_attaches_regions_and_trains(tiny_lvis, store, vocab, tmp_path):
    from vild_d2.engine import Trainer

    cfg = _vild_cfg(tiny_lvis, store, vocab, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1")
    check_training_inputs(cfg)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert len(batch) == 2
    for x in batch:
        r = x["distill_regions"]
        assert r.embeddings.shape[1] == D and 0 < len(r) <= cfg.MODEL.VILD.NUM_DISTILL_REGIONS
    trainer = Trainer(cfg)
    trainer.train()
    losses = trainer.storage.latest()
    assert np.isfinite(losses["loss_image"][0]) and losses["loss_image"][0] > 0


def test_training_input_errors(tiny_lvis, store, vocab, tmp_path):
    with pytest.raises(
        ConfigError,
        match="REGION_STORE_TRAIN is empty: .*IMAGE_LOSS_WEIGHT > 0 .* needs distillation regions",
    ):
        check_training_inputs(_vild_cfg(tiny_lvis, "", vocab))
    with pytest.raises(
        ConfigError,
        match=f"region store {store} holds D = {D} embeddings, but MODEL.VILD.EMBED_DIM is 64",
    ):
        check_training_inputs(_vild_cfg(tiny_lvis, store, vocab, "MODEL.VILD.EMBED_DIM", "64"))
    with pytest.raises(ConfigError, match="no manifest.json"):
        check_training_inputs(_vild_cfg(tiny_lvis, str(tmp_path), vocab))
    partial = str(tmp_path / "partial")
    create_region_store(partial, teacher="t", embed_dim=D)
    with ShardWriter(partial, 0) as w:
        w.add(
            DatasetCatalog.get(tiny_lvis["names"]["train"])[0]["image_id"],
            np.zeros((0, 4)),
            np.zeros((0, D)),
            (96, 96),
        )
    finalize_region_store(partial)
    cfg = _vild_cfg(tiny_lvis, partial, vocab)
    with pytest.raises(
        RegionStoreError, match=f"region store {partial} has no regions for 2 of the 3 images"
    ):
        open_training_store(cfg, DatasetCatalog.get(tiny_lvis["names"]["train"]))


def test_image_without_annotations_under_lsj_trains(tiny_lvis, store, vocab):
    """An image left without annotations (only novel objects) still gives regions and a loss."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    cfg = _vild_cfg(
        tiny_lvis, store, vocab, "INPUT.LSJ.ENABLED", "True", "INPUT.LSJ.IMAGE_SIZE", "96"
    )
    mapper = DistillDatasetMapper(cfg, is_train=True)
    assert mapper.recompute_boxes  # LSJ + masks: the case detectron2 v0.6 fails on
    dicts = DatasetCatalog.get(tiny_lvis["names"]["train"])
    np.random.seed(0)
    empty = mapper(dict(dicts[0], annotations=[]))
    assert len(empty["instances"]) == 0 and len(empty["distill_regions"]) > 0
    full = mapper(dicts[1])
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model([empty, full])
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_image"] > 0


def test_text_and_regions_of_two_teachers_are_refused(tiny_lvis, store, tmp_path):
    """Both D = 32: it used to train, distilling towards one CLIP and classifying in another."""
    import json

    text = str(tmp_path / "text.npy")
    np.save(text, np.random.default_rng(0).normal(size=(48, D)).astype(np.float32))
    sidecar = tmp_path / "text.json"
    sidecar.write_text(json.dumps({"teacher": "ViT-B/16"}))
    with pytest.raises(ConfigError, match=r"two teachers: .*text\.npy was embedded by ViT-B/16"):
        check_training_inputs(_vild_cfg(tiny_lvis, store, text))  # the store's: "random"
    sidecar.write_text(json.dumps({"teacher": "random"}))
    check_training_inputs(_vild_cfg(tiny_lvis, store, text))
    # checkpoint files: compared by the sha256 both recorded, not by path
    other = str(tmp_path / "store_b")
    create_region_store(
        other, teacher="/old/place/clip.pt", embed_dim=D, extra={"teacher_sha256": "aa"}
    )
    with ShardWriter(other, 0) as w:
        for d in DatasetCatalog.get(tiny_lvis["names"]["train"]):
            w.add(d["image_id"], np.zeros((1, 4)) + [0, 0, 8, 8], np.eye(1, D), (96, 96))
    finalize_region_store(other)
    sidecar.write_text(json.dumps({"teacher": "/new/place/clip.pt", "teacher_sha256": "aa"}))
    check_training_inputs(_vild_cfg(tiny_lvis, other, text))
    sidecar.write_text(json.dumps({"teacher": "/old/place/clip.pt", "teacher_sha256": "bb"}))
    with pytest.raises(ConfigError, match=r"\(bb\), DATASETS.REGION_STORE_TRAIN .* \(aa\)"):
        check_training_inputs(_vild_cfg(tiny_lvis, other, text))
