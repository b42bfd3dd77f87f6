"""vild_d2.OpenVocabularyDetector: a model folder, an image and words -> detections."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import vild_d2
from vild_d2.inference import ModelFolderError, parse_words
from vild_d2.vocabulary.user import VocabularyError

from .conftest import TINY_CLIP_SHAPE


@pytest.fixture(scope="module")
def detector(tiny_model_folder):
    return vild_d2.OpenVocabularyDetector.load(tiny_model_folder["path"], device="cpu")


@pytest.fixture(scope="module")
def image_path(tiny_lvis):
    folder = os.path.join(tiny_lvis["root"], "val")
    return os.path.join(folder, sorted(os.listdir(folder))[0])


WORDS = ["red circle", "blue star", "hat"]


def test_words_as_list_comma_or_colab_semicolons():
    assert parse_words(["a", " b "]) == ["a", "b"]
    assert parse_words("red kite, mug") == ["red kite", "mug"]
    assert parse_words("red kite; mug, with comma") == ["red kite", "mug, with comma"]
    for bad in ("", " , ", "a,,b", "mug, mug", []):
        with pytest.raises(VocabularyError):
            parse_words(bad)


def test_the_folder_names_the_teacher(detector, tiny_model_folder):
    assert detector.teacher == tiny_model_folder["teacher"]
    assert detector.folder.example_words[0] == tiny_model_folder["names"][0]


def test_detections_plain_and_detectron2(detector, image_path):
    found = detector(image_path, WORDS, score_threshold=0.0)
    height, width = np.asarray(Image.open(image_path)).shape[:2]
    assert len(found) > 0 and found.instances.image_size == (height, width)
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)
    for d in found:
        assert d.name in WORDS and 0.0 <= d.score <= 1.0
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        assert d.mask.shape == (height, width) and d.mask.dtype == bool
    assert json.loads(json.dumps(found.records()))[0]["name"] == found[0].name


def test_image_as_path_pil_array_and_grey_give_the_same(detector, image_path):
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    by_path = detector(image_path, WORDS, score_threshold=0.0).records()
    assert detector(Image.open(image_path), WORDS, score_threshold=0.0).records() == by_path
    assert detector(rgb, WORDS, score_threshold=0.0).records() == by_path
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert detector(rgba, WORDS, score_threshold=0.0).records() == by_path
    assert len(detector(rgb[:, :, 0], WORDS, score_threshold=0.0)) > 0


def test_knobs(detector, image_path):
    everything = detector(image_path, WORDS, score_threshold=0.0)
    median = float(np.median([d.score for d in everything]))
    kept = detector(image_path, WORDS, score_threshold=median)
    assert 0 < len(kept) < len(everything) and min(d.score for d in kept) >= median
    assert len(everything.above(median)) == len(kept)
    assert len(detector(image_path, WORDS, score_threshold=0.0, max_detections=3)) == 3
    areas = sorted(d.area for d in everything)
    big = detector(image_path, WORDS, score_threshold=0.0, min_box_area=areas[len(areas) // 2])
    assert 0 < len(big) < len(everything) and min(d.area for d in big) >= areas[len(areas) // 2]
    # a tighter NMS keeps no more boxes than a looser one
    tight = detector(image_path, WORDS, score_threshold=0.0, nms_threshold=0.1)
    assert len(tight) <= len(detector(image_path, WORDS, score_threshold=0.0, nms_threshold=0.9))
    # the knobs of one call do not stay: the next call is the config's again
    assert detector(image_path, WORDS, score_threshold=0.0).records() == everything.records()


@pytest.mark.parametrize(
    "knobs, message",
    [
        (dict(score_threshold=1.5), "score_threshold 1.5"),
        (dict(nms_threshold=0.0), "nms_threshold 0.0"),
        (dict(min_box_area=-1), "min_box_area -1"),
        (dict(max_detections=0), "max_detections 0"),
    ],
)
def test_bad_knobs_say_which(detector, image_path, knobs, message):
    with pytest.raises(ValueError, match=message):
        detector(image_path, WORDS, **knobs)


def test_a_vocabulary_is_embedded_once(detector, image_path, monkeypatch):
    detector(image_path, WORDS)
    calls = []
    import vild_d2.inference.detector as module

    monkeypatch.setattr(module, "encode_vocabulary", lambda *a, **k: calls.append(a) or None)
    detector(image_path, "red circle, blue star, hat")  # the same words as a string
    assert calls == []


def test_bad_images_name_themselves(detector, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        detector(str(tmp_path / "missing.jpg"), WORDS)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        detector(str(broken), WORDS)
    with pytest.raises(ValueError, match="float32"):
        detector(np.zeros((8, 8, 3), np.float32), WORDS)
    with pytest.raises(ValueError, match=r"\(8, 8, 2\)"):
        detector(np.zeros((8, 8, 2), np.uint8), WORDS)


def test_folders_that_cannot_serve_say_why(tiny_model_folder, tmp_path):
    with pytest.raises(ModelFolderError, match="no config.yaml"):
        vild_d2.OpenVocabularyDetector.load(str(tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_folder["path"], copy)
    os.remove(copy / "train_text.json")
    config = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(config.replace(tiny_model_folder["path"], str(copy)))
    with pytest.raises(ModelFolderError, match="beside it naming its teacher"):
        vild_d2.OpenVocabularyDetector.load(str(copy))
    (copy / "config.yaml").write_text(config.replace("ViLDRCNN", "GeneralizedRCNN"))
    with pytest.raises(ModelFolderError, match="not an open-vocabulary one"):
        vild_d2.OpenVocabularyDetector.load(str(copy))


def test_converted_release_embeds_words_with_vit_b32(converted_oracle, tmp_path, tiny_lvis):
    from vild_d2.teacher import build_clip, save_clip_checkpoint

    detector = vild_d2.OpenVocabularyDetector.load(converted_oracle, device="cpu")
    assert detector.teacher == "ViT-B/32"
    # here (no internet, no ViT-B/32) a local CLIP of the release's D = 512 stands in
    clip_512 = str(tmp_path / "clip_512.pt")
    save_clip_checkpoint(build_clip(seed=0, **{**TINY_CLIP_SHAPE, "embed_dim": 512}), clip_512)
    detector = vild_d2.OpenVocabularyDetector.load(converted_oracle, "cpu", teacher=clip_512)
    image = os.path.join(
        tiny_lvis["root"], "val", sorted(os.listdir(tiny_lvis["root"] + "/val"))[0]
    )
    found = detector(image, "cat; teapot; red kite", score_threshold=0.0, max_detections=5)
    assert 0 < len(found) <= 5 and {d.name for d in found} <= {"cat", "teapot", "red kite"}
    # a teacher of another D is refused naming both
    with pytest.raises(ValueError, match="D = 32.*D = 512"):
        vild_d2.OpenVocabularyDetector.load(
            converted_oracle, "cpu", teacher=detector_teacher_32(tmp_path)
        )(image, ["cat"])


def detector_teacher_32(tmp_path):
    from vild_d2.teacher import build_clip, save_clip_checkpoint

    path = str(tmp_path / "clip_32.pt")
    save_clip_checkpoint(build_clip(seed=0, **TINY_CLIP_SHAPE), path)
    return path
