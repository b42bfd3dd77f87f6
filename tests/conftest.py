"""Shared fixtures: a tiny generated LVIS-format dataset and a tiny random CLIP."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "configs", "shapes_world", "mask_rcnn_R_18_FPN_tiny.yaml")
# Real COCO images and CLIP text embeddings on developer machines and CI (never copied here):
# ../shared/data next to the checkout, or the folder named by VILD_D2_SHARED_DATA.
SHARED = os.environ.get("VILD_D2_SHARED_DATA") or os.path.join(
    os.path.dirname(ROOT), "shared", "data"
)
needs_shared = pytest.mark.skipif(
    not os.path.isdir(SHARED),
    reason=f"real data folder {SHARED} is absent (developer machines only)",
)
# The official ViLD oracle: a random-weight ViLD-ensemble checkpoint of the official TF code
# and every intermediate tensor it computed for three images (its README says how).
OFFICIAL = os.path.join(SHARED, "official_vild")
ORACLE = os.path.join(OFFICIAL, "small")
ORACLE_IMAGES = ("coco_000000000009", "coco_000000000025", "synthetic")

# A CLIP of the ViT kind, small enough for CPU tests (widths are multiples of 64 so that
# clip.model.build_model infers the same shape back from the state dict).
TINY_CLIP_SHAPE = dict(
    embed_dim=32,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=8,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=2,
)


@pytest.fixture(scope="session")
def tiny_lvis(tmp_path_factory):
    """3 train + 2 val images of the shapes world, registered as tiny_lvis_{train,val}."""
    from detectron2.data import DatasetCatalog

    from vild_d2.data.datasets import register_lvis_format
    from vild_d2.world.spec import ShapesWorldSpec
    from vild_d2.world.splits import generate_shapes_world

    root = str(tmp_path_factory.mktemp("tiny_lvis"))
    spec = ShapesWorldSpec(seed=1, num_train=3, num_val=2, image_size=96, object_size=(12, 28))
    paths = generate_shapes_world(root, spec)
    names = {}
    for split, json_file in paths.items():
        name = f"tiny_lvis_{split}"
        if name not in DatasetCatalog.list():
            register_lvis_format(name, json_file, root)
        names[split] = name
    return {"root": root, "json": paths, "names": names, "spec": spec}


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory):
    from vild_d2.teacher import build_clip, save_clip_checkpoint

    model = build_clip(seed=0, **TINY_CLIP_SHAPE)
    path = str(tmp_path_factory.mktemp("clip") / "tiny_clip.pt")
    save_clip_checkpoint(model, path)
    return {"path": path, "model": model}


@pytest.fixture(scope="session")
def converted_oracle(tmp_path_factory):
    """The oracle's TF checkpoint converted by tools/convert_official_checkpoint.py."""
    from .helpers.scripts import load_script

    if needs_shared.args[0]:  # the data absent: skip its users, as needs_shared does
        pytest.skip(needs_shared.kwargs["reason"])
    out = str(tmp_path_factory.mktemp("official") / "converted")
    tool = load_script("tools/convert_official_checkpoint.py")
    assert tool.main([os.path.join(ORACLE, "model.ckpt"), "--output", out, "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory, tiny_clip_checkpoint):
    """
    A model folder as train_net.py leaves one (config.yaml, model_final.pth): a random
    tiny ViLD whose training vocabulary's .json names the tiny CLIP as its teacher.
    """
    import json

    import numpy as np
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from vild_d2.config import load_config
    from vild_d2.vocabulary.prompts import encode_vocabulary

    folder = tmp_path_factory.mktemp("model_folder") / "tiny_vild"
    folder.mkdir()
    names = ["red circle", "blue star", "green heart"]
    embeddings = str(folder / "train_text.npy")
    np.save(embeddings, encode_vocabulary(tiny_clip_checkpoint["model"], names).numpy())
    with open(folder / "train_text.json", "w") as f:
        json.dump({"class_names": names, "teacher": tiny_clip_checkpoint["path"]}, f)
    config = os.path.join(ROOT, "configs", "shapes_world", "vild_R_18_FPN_tiny.yaml")
    opts = ["MODEL.DEVICE", "cpu", "MODEL.VILD.EMBED_DIM", "32"]
    opts += ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", embeddings]
    opts += ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "3"]
    cfg = load_config(config, opts)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("model_final")
    (folder / "config.yaml").write_text(cfg.dump())
    return {"path": str(folder), "names": names, "teacher": tiny_clip_checkpoint["path"]}
