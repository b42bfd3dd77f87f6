"""demo/demo.py: your images and words in, pictures and a COCO-results json out."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from vild_d2.config import load_config
from vild_d2.utils.output_folder import OWNER_FILE

from .conftest import ROOT
from .helpers.scripts import load_script

CONFIG = os.path.join(ROOT, "configs", "shapes_world", "vild_R_18_FPN_tiny.yaml")
D = 32  # the tiny CLIP's embedding size


@pytest.fixture(scope="module")
def setup(tiny_lvis, tiny_clip_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_cli")
    train_vocab = str(folder / "train.npy")
    np.save(train_vocab, np.random.default_rng(0).normal(size=(48, D)).astype(np.float32))
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.VILD.EMBED_DIM",
        str(D),
        "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        train_vocab,
        "DATASETS.TRAIN",
        "()",
        "DATASETS.TEST",
        "()",
    ]
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, opts))
    DetectionCheckpointer(model, save_dir=str(folder)).save("model")
    opts += ["MODEL.WEIGHTS", str(folder / "model.pth")]
    exported = str(folder / "exported")
    assert (
        load_script("tools/export_model.py").main(
            ["--config-file", CONFIG, "--output", exported, *opts]
        )
        == 0
    )
    images = os.path.join(tiny_lvis["root"], "val")
    return {
        "opts": opts,
        "images": images,
        "teacher": tiny_clip_checkpoint["path"],
        "folder": folder,
        "torchscript": os.path.join(exported, "model.ts"),
        "num_images": len(os.listdir(images)),
    }


def _run(args, capsys):
    code = load_script("demo/demo.py").main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_custom_vocabulary_pictures_and_json(setup, tmp_path, capsys):
    out = str(tmp_path / "out")
    names = ["red circle", "blue star", "hat"]
    code, stdout, err = _run(
        [
            "--config-file",
            CONFIG,
            "--input",
            setup["images"],
            "--output",
            out,
            "--custom-vocabulary",
            ", ".join(names),
            "--teacher",
            setup["teacher"],
            "--confidence-threshold",
            "0.0",
            "--opts",
            *setup["opts"],
        ],
        capsys,
    )
    assert code == 0, err
    pictures = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pictures == sorted(os.listdir(setup["images"]))
    results = _results(out)
    assert results and {r["category_name"] for r in results} <= set(names)
    assert len({r["category_name"] for r in results}) > 1
    for r in results:
        assert r["category_name"] == names[r["category_id"] - 1]
        assert len(r["bbox"]) == 4 and r["bbox"][2] > 0 and "segmentation" in r
    assert {r["image_id"] for r in results} <= set(range(1, setup["num_images"] + 1))
    # a higher threshold keeps fewer, all above it
    out2 = str(tmp_path / "out2")
    median = float(np.median([r["score"] for r in results]))
    assert (
        _run(
            [
                "--config-file",
                CONFIG,
                "--input",
                setup["images"],
                "--output",
                out2,
                "--custom-vocabulary",
                ",".join(names),
                "--teacher",
                setup["teacher"],
                "--confidence-threshold",
                str(median),
                "--opts",
                *setup["opts"],
            ],
            capsys,
        )[0]
        == 0
    )
    kept = _results(out2)
    assert 0 < len(kept) < len(results) and min(r["score"] for r in kept) >= median - 1e-5


def test_torchscript_file_gives_the_eager_results(setup, tmp_path, capsys):
    vocab = tmp_path / "vocab.npy"
    np.save(vocab, np.random.default_rng(5).normal(size=(6, D)).astype(np.float32))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"thing {i}" for i in range(6)) + "\n")
    common = [
        "--input",
        os.path.join(setup["images"], "*.png"),
        "--vocabulary-file",
        str(vocab),
        "--vocabulary-names",
        str(names),
        "--confidence-threshold",
        "0.05",
    ]
    assert (
        _run(
            [
                "--config-file",
                CONFIG,
                "--output",
                str(tmp_path / "eager"),
                *common,
                "--opts",
                *setup["opts"],
            ],
            capsys,
        )[0]
        == 0
    )
    assert (
        _run(
            ["--torchscript", setup["torchscript"], "--output", str(tmp_path / "ts"), *common],
            capsys,
        )[0]
        == 0
    )
    eager, ts = _results(tmp_path / "eager"), _results(tmp_path / "ts")
    assert len(eager) == len(ts) > 0
    for a, b in zip(eager, ts):
        assert a["category_name"] == b["category_name"] and a["image_id"] == b["image_id"]
        assert np.allclose(a["bbox"], b["bbox"], atol=0.02) and abs(a["score"] - b["score"]) < 1e-4


def test_noun_x_attribute_vocabulary(setup, tmp_path, capsys):
    out = str(tmp_path / "out")
    code, _, err = _run(
        [
            "--config-file",
            CONFIG,
            "--input",
            setup["images"],
            "--output",
            out,
            "--nouns",
            "circle,star,heart",
            "--attributes",
            "red,blue",
            "--teacher",
            setup["teacher"],
            "--confidence-threshold",
            "0.0",
            "--opts",
            *setup["opts"],
        ],
        capsys,
    )
    assert code == 0, err
    pairs = [f"{a} {n}" for n in ("circle", "star", "heart") for a in ("red", "blue")]
    results = _results(out)
    assert results and {r["category_name"] for r in results} <= set(pairs)
    for r in results:
        assert r["category_name"] == pairs[r["category_id"] - 1]


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "duplicate",
        "wrong_dim",
        "missing_image",
        "not_an_image",
        "attributes_alone",
        "no_teacher",
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(case, setup, tmp_path, capsys):
    out = tmp_path / "out"
    model = ["--config-file", CONFIG]
    vocab = ["--custom-vocabulary", "a, b", "--teacher", setup["teacher"]]
    inputs = ["--input", setup["images"]]
    expected = {
        "empty": "empty",
        "duplicate": "same name 'cat'",
        "wrong_dim": "dimension 16",
        "missing_image": "nowhere.png",
        "not_an_image": "not a readable image",
        "attributes_alone": "--attributes needs --nouns",
        "no_teacher": "needs --teacher",
    }[case]
    if case == "empty":
        vocab = ["--custom-vocabulary", " ", "--teacher", setup["teacher"]]
    elif case == "duplicate":
        vocab = ["--custom-vocabulary", "cat,dog,cat", "--teacher", setup["teacher"]]
    elif case == "wrong_dim":
        bad = tmp_path / "bad.npy"
        np.save(bad, np.ones((3, 16), np.float32))
        (tmp_path / "bad.txt").write_text("a\nb\nc\n")
        vocab = ["--vocabulary-file", str(bad), "--vocabulary-names", str(tmp_path / "bad.txt")]
    elif case == "missing_image":
        inputs = ["--input", setup["images"], str(tmp_path / "nowhere.png")]
    elif case == "not_an_image":
        (tmp_path / "fake.png").write_bytes(b"not a png")
        inputs = ["--input", str(tmp_path / "fake.png")]
    elif case == "attributes_alone":
        vocab = ["--attributes", "red", "--teacher", setup["teacher"]]
    elif case == "no_teacher":
        vocab = ["--custom-vocabulary", "a,b"]
    code, _, err = _run(
        [*model, *inputs, "--output", str(out), *vocab, "--opts", *setup["opts"]], capsys
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo.py: error:") and expected in lines[0], err
    assert not out.exists()


def test_a_datasets_vocabulary_with_its_embedding_file(setup, tiny_lvis, tmp_path, capsys):
    vocab = tmp_path / "world.npy"
    np.save(vocab, np.random.default_rng(2).normal(size=(48, D)).astype(np.float32))
    out = str(tmp_path / "out")
    code, _, err = _run(
        [
            "--config-file",
            CONFIG,
            "--input",
            setup["images"],
            "--output",
            out,
            "--vocabulary",
            tiny_lvis["names"]["val"],
            "--vocabulary-file",
            str(vocab),
            "--confidence-threshold",
            "0.0",
            "--opts",
            *setup["opts"],
        ],
        capsys,
    )
    assert code == 0, err
    from detectron2.data import MetadataCatalog

    names = MetadataCatalog.get(tiny_lvis["names"]["val"]).thing_classes
    results = _results(out)
    assert results and all(r["category_name"] == names[r["category_id"] - 1] for r in results)
    code, _, err = _run(
        [
            "--config-file",
            CONFIG,
            "--input",
            setup["images"],
            "--output",
            str(tmp_path / "o2"),
            "--vocabulary",
            "no_such_dataset",
            "--opts",
            *setup["opts"],
        ],
        capsys,
    )
    assert code == 2 and "no such builtin" in err


def _grey_16_bit_png(path, low=8481, high=50115):
    """A 16-bit grey PNG (PIL mode I;16) with a gradient from ``low`` to ``high``."""
    from PIL import Image

    ramp = np.linspace(low, high, 96 * 128).reshape(96, 128).astype(np.uint16)
    Image.fromarray(ramp).save(path)  # uint16: PIL mode I;16
    return ramp


def test_a_16_bit_image_is_read_as_its_8_bit_picture(tmp_path):
    from detectron2.data import detection_utils
    from PIL import Image

    from vild_d2.data import DistillDatasetMapper
    from vild_d2.data.images import read_image

    ramp = _grey_16_bit_png(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")
    rgb = read_image(str(tmp_path / "deep.png"), format="RGB")  # every reader of vild_d2's
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert rgb.min() == 33 and rgb.max() == 195  # not all white (detectron2 alone: all 255)
    # the data loaders read it the same way; detectron2's own reader is left as it is
    cfg = load_config(CONFIG, ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"])
    mapped = DistillDatasetMapper(cfg, is_train=False)(
        {"file_name": str(tmp_path / "deep.png"), "image_id": 1, "height": 96, "width": 128}
    )
    assert mapped["image"].shape == (3, 96, 128) and int(mapped["image"].max()) == 195
    assert detection_utils.read_image.__module__ == "detectron2.data.detection_utils"
    assert detection_utils.read_image(str(tmp_path / "deep.png"), format="RGB").min() == 255


def test_a_16_bit_image_gets_detections_and_a_float_image_is_refused(setup, tmp_path, capsys):
    from PIL import Image

    _grey_16_bit_png(tmp_path / "deep.png")
    common = ["--config-file", CONFIG, "--custom-vocabulary", "a,b", "--teacher", setup["teacher"]]
    code, _, err = _run(
        [*common, "--input", str(tmp_path / "deep.png"), "--output", str(tmp_path / "out"),
         "--confidence-threshold", "0.0", "--opts", *setup["opts"]],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    picture = np.asarray(Image.open(tmp_path / "out" / "deep.png").convert("L"))
    assert picture.min() < 100  # the gradient is drawn, not a white page
    Image.fromarray(np.ones((32, 32), np.float32)).save(tmp_path / "float.tif")  # mode F
    code, _, err = _run(
        [*common, "--input", str(tmp_path / "float.tif"), "--output", str(tmp_path / "out2"),
         "--opts", *setup["opts"]],
        capsys,
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "float.tif" in err and "PIL mode F" in err and not (tmp_path / "out2").exists()


def test_a_truncated_image_among_good_ones_fails_before_anything_is_written(
    setup, tmp_path, capsys
):
    folder = tmp_path / "images"
    folder.mkdir()
    good = sorted(os.listdir(setup["images"]))
    for name in good:
        (folder / name).write_bytes(open(os.path.join(setup["images"], name), "rb").read())
    data = (folder / good[0]).read_bytes()
    (folder / "zz_truncated.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, _, err = _run(
        ["--config-file", CONFIG, "--input", str(folder), "--output", str(out),
         "--custom-vocabulary", "a,b", "--teacher", setup["teacher"], "--opts", *setup["opts"]],
        capsys,
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "zz_truncated.png" in lines[0] and "1 of" in lines[0], err
    assert not out.exists()


def test_a_folder_with_results_is_refused_or_replaced_whole(setup, tmp_path, capsys):
    out = tmp_path / "out"
    model = ["--config-file", CONFIG, "--custom-vocabulary", "a,b", "--teacher", setup["teacher"]]
    opts = ["--output", str(out), "--opts", *setup["opts"]]  # --opts takes the rest: last
    images = [os.path.join(setup["images"], n) for n in sorted(os.listdir(setup["images"]))]
    assert _run([*model, "--input", *images, *opts], capsys)[0] == 0
    before = sorted(os.listdir(out))
    code, _, err = _run([*model, "--input", images[0], *opts], capsys)
    assert code == 2 and "holds an earlier demo.py output: add --overwrite" in err
    assert sorted(os.listdir(out)) == before  # untouched
    code, _, err = _run([*model, "--input", images[0], "--overwrite", *opts], capsys)
    assert code == 0, err
    picture = os.path.splitext(os.path.basename(images[0]))[0] + ".png"
    assert sorted(os.listdir(out)) == sorted([picture, "results.json", OWNER_FILE])
    assert {r["file_name"] for r in _results(out)} == {images[0]}


def test_a_file_that_is_not_torchscript_is_one_short_line(setup, tmp_path, capsys):
    fake = tmp_path / "weights.pt"
    torch.save({"not": "a module"}, fake)
    code, _, err = _run(
        ["--torchscript", str(fake), "--input", setup["images"], "--output", str(tmp_path / "o"),
         "--custom-vocabulary", "a,b", "--teacher", setup["teacher"]],
        capsys,
    )  # fmt: skip
    assert code == 2
    line = err.strip()
    assert len(line.splitlines()) == 1 and "weights.pt: not a TorchScript file" in line
    assert "corrupted" not in line and "miniz" not in line


def test_a_model_folder_names_its_own_teacher(tiny_model_folder, setup, tmp_path, capsys):
    out = str(tmp_path / "out")
    args = ["--model", tiny_model_folder["path"], "--input", setup["images"], "--output", out]
    code, _, err = _run(args + ["--custom-vocabulary", "red kite, mug"], capsys)
    assert code == 0, err
    assert {r["category_name"] for r in _results(out)} <= {"red kite", "mug"}
    (tmp_path / "empty").mkdir()
    code, _, err = _run(
        ["--model", str(tmp_path / "empty"), "--input", setup["images"], "--output", out + "2"],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "not a model folder" in err


def test_overwrite_never_deletes_what_demo_did_not_write(setup, tmp_path, capsys):
    """--overwrite on the input folder, on a folder of the user's, on a file: refused, intact."""
    photos = tmp_path / "photos"
    shutil.copytree(setup["images"], photos)
    (photos / "notes.txt").write_text("mine")
    before = sorted(os.listdir(photos))
    model = ["--config-file", CONFIG, "--custom-vocabulary", "a,b", "--teacher", setup["teacher"]]
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "thesis.tex").write_text("mine")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for output, message in [
        (photos, "is the input"),
        (photos / "out", "is inside the input"),
        (tmp_path, "holds the input"),
        (user_folder, "was not written by demo.py"),
        (a_file, "is a file, not a folder"),
    ]:
        code, _, err = _run(
            [*model, "--input", str(photos), "--output", str(output), "--overwrite",
             "--opts", *setup["opts"]], capsys,
        )  # fmt: skip
        assert code == 2 and err.count("\n") == 1 and message in err, (output, err)
    assert sorted(os.listdir(photos)) == before and (photos / "notes.txt").read_text() == "mine"
    assert (user_folder / "thesis.tex").read_text() == "mine" and a_file.read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["a_file", "mine", "photos"]  # nothing hidden left


def test_a_blank_line_in_a_names_file_is_refused_not_skipped(tmp_path):
    from vild_d2.vocabulary.user import VocabularyError, file_vocabulary

    emb = tmp_path / "vocab.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(3, D)).astype(np.float32))
    names = tmp_path / "names.txt"
    names.write_text("cat\n\ndog\nmug\n")  # skipped, it gave 3 names for 3 rows: all shifted
    with pytest.raises(VocabularyError, match="names.txt: line 2 is blank"):
        file_vocabulary(str(emb), D, str(names))
    names.write_text("cat\ndog\nmug\n\n\n")  # blank lines after the last name are no row
    assert file_vocabulary(str(emb), D, str(names)).names == ["cat", "dog", "mug"]


def test_masks_are_pasted_only_for_detections_kept(setup, tmp_path, capsys, monkeypatch):
    """A 12 MP photo with 100 detections pasted 100 full-size masks before thresholding."""
    from detectron2.structures import ROIMasks

    pasted = []
    paste = ROIMasks.to_bitmasks  # what detector_postprocess pastes the masks with

    def spy(self, *args, **kwargs):
        pasted.append(len(self.tensor))
        return paste(self, *args, **kwargs)

    monkeypatch.setattr(ROIMasks, "to_bitmasks", spy)
    image = os.path.join(setup["images"], sorted(os.listdir(setup["images"]))[0])
    model = ["--config-file", CONFIG, "--custom-vocabulary", "a,b", "--teacher", setup["teacher"]]
    for threshold in ("0.0", "0.6"):
        out = str(tmp_path / threshold)
        args = [*model, "--input", image, "--output", out, "--confidence-threshold", threshold]
        assert _run([*args, "--opts", *setup["opts"]], capsys)[0] == 0
        assert pasted[-1] == len(_results(out)), (threshold, pasted)
    assert pasted[0] > pasted[1]  # fewer kept, fewer pasted
