"""Bad training images stop training before its first iteration, all named at once."""

import os
import time

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

from vild_d2.config import load_config
from vild_d2.data.build import build_vild_train_loader
from vild_d2.data.datasets import register_lvis_format
from vild_d2.data.image_check import ImageCheckError, check_images
from vild_d2.world.spec import ShapesWorldSpec
from vild_d2.world.splits import generate_shapes_world

from .conftest import TINY_CONFIG


def _image(path, width, height):
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(path)


def test_every_bad_image_is_named_at_once_and_a_pass_is_cached(tmp_path):
    _image(tmp_path / "good.png", 40, 30)
    _image(tmp_path / "small.png", 20, 30)
    (tmp_path / "garbage.png").write_bytes(b"not an image" * 10)
    dicts = [
        {"file_name": str(tmp_path / n), "height": 30, "width": 40}
        for n in ("good.png", "missing.png", "garbage.png", "small.png")
    ]
    with pytest.raises(ImageCheckError) as e:
        check_images(dicts, cache_dir=str(tmp_path / "cache"))
    text = str(e.value)
    assert text.startswith("3 of 4 training images cannot be used")
    assert "missing.png (missing)" in text and "garbage.png (not a readable image" in text
    assert "small.png (is 20x30 but its annotation says 40x30)" in text and "good.png" not in text
    assert not (tmp_path / "cache").exists()  # a failed check is never cached

    good = dicts[:1]
    assert check_images(good, cache_dir=str(tmp_path / "cache")) == 1
    assert check_images(good, cache_dir=str(tmp_path / "cache")) == 0  # cached: instant
    time.sleep(0.01)
    (tmp_path / "good.png").write_bytes(b"changed")  # same list, changed file: checked again
    with pytest.raises(ImageCheckError, match="good.png"):
        check_images(good, cache_dir=str(tmp_path / "cache"))


def test_training_loader_refuses_a_missing_image_before_the_first_iteration(tmp_path):
    root = tmp_path / "world"
    paths = generate_shapes_world(
        str(root),
        ShapesWorldSpec(seed=4, num_train=5, num_val=1, image_size=64, object_size=(10, 20)),
    )
    name = "image_check_train"
    if name not in DatasetCatalog.list():
        register_lvis_format(name, paths["train"], str(root))
    os.remove(root / "train" / "000002.png")
    cfg = load_config(
        TINY_CONFIG,
        [
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ],
    )
    with pytest.raises(
        ImageCheckError,
        match=r"1 of 5 training images of \('image_check_train',\).*000002.png \(missing\)",
    ):
        build_vild_train_loader(cfg)


def test_pixel_formats_without_an_8_bit_reading_and_truncated_files(tmp_path):
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(tmp_path / "deep.png")  # I;16
    Image.fromarray(np.ones((30, 40), np.float32)).save(tmp_path / "float.tif")  # F
    _image(tmp_path / "cut.png", 40, 30)
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    dicts = [
        {"file_name": str(tmp_path / n), "height": 30, "width": 40}
        for n in ("deep.png", "float.tif", "cut.png")
    ]
    with pytest.raises(ImageCheckError) as e:
        check_images(dicts)  # header level: the truncated file still has its header
    assert "1 of 3" in str(e.value) and "float.tif (PIL mode F" in str(e.value)
    with pytest.raises(ImageCheckError) as e:
        check_images(dicts, decode=True)  # every pixel: the truncated one too
    assert "2 of 3" in str(e.value) and "cut.png (not a readable image" in str(e.value)
    assert check_images(dicts[:1], decode=True) == 1  # 16 bits are read (scaled to 8)
