"""TorchScript export with the vocabulary as an input: parity with eager, reload with torch only."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from vild_d2.config import load_config
from vild_d2.export import ExportError, export_model
from vild_d2.modeling import ZeroShotClassifier

from .conftest import ROOT, TINY_CONFIG
from .helpers.scripts import load_script

CONFIGS = {
    name: os.path.join(ROOT, "configs", "shapes_world", f"{name}_R_18_FPN_tiny.yaml")
    for name in ("vild", "vild_ensemble")
}
D, C = 32, 48
DATASET = "test_export_ov"  # metadata only: 48 classes, the last 6 novel


@pytest.fixture(scope="module")
def train_vocab(tmp_path_factory):
    if DATASET not in MetadataCatalog.list():
        MetadataCatalog.get(DATASET).set(
            thing_classes=[f"class {i}" for i in range(C)], novel_class_ids=list(range(42, 48))
        )
    path = str(tmp_path_factory.mktemp("vocab") / "train.npy")
    np.save(path, np.random.default_rng(0).normal(size=(C, D)).astype(np.float32))
    return path


def _opts(train_vocab):
    return [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.VILD.EMBED_DIM",
        str(D),
        "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        train_vocab,
        "DATASETS.TRAIN",
        f"('{DATASET}',)",
        "DATASETS.TEST",
        f"('{DATASET}',)",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.01",
    ]


def _model(name, train_vocab):
    torch.manual_seed(0)
    return build_model(load_config(CONFIGS[name], _opts(train_vocab))).eval()


def _image(seed=0, height=96, width=128):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=g).float()


def _vocabularies():
    g = torch.Generator().manual_seed(1)
    out = []
    for c in (7, 30):  # two vocabularies, neither the one the model was built or traced with
        mask = torch.zeros(c, dtype=torch.bool)
        mask[: c // 2] = True
        out.append((torch.randn(c, D, generator=g) * 3, mask))  # any norm: normalised inside
    return out


def _eager(model, image, vocab, mask):
    model.set_vocabulary(vocab, mask)
    with torch.no_grad():
        inst = model.inference([{"image": image}], do_postprocess=False)[0]
    return {
        "boxes": inst.pred_boxes.tensor,
        "scores": inst.scores,
        "classes": inst.pred_classes,
        "masks": inst.pred_masks,
    }


def _assert_same(eager, exported):
    assert len(eager["boxes"]) > 0
    assert torch.equal(eager["classes"], exported["classes"])
    for key in ("boxes", "scores", "masks"):
        assert eager[key].shape == exported[key].shape, key
        assert torch.allclose(eager[key], exported[key], atol=1e-4, rtol=0), key


def _call(module, name, image, vocab, mask):
    args = (image, vocab, mask) if name == "vild_ensemble" else (image, vocab)
    with torch.no_grad():
        return module(*args)


@pytest.mark.parametrize("method", ["scripting", "tracing"])
@pytest.mark.parametrize("name", ["vild", "vild_ensemble"])
def test_exported_matches_eager_for_two_vocabularies(name, method, train_vocab):
    model = _model(name, train_vocab)
    image = _image()
    exported = export_model(model, method, image)  # tracing records the 48-class vocabulary
    for vocab, mask in _vocabularies():
        ours = _call(exported, name, image, vocab, mask)
        assert int(ours["classes"].max()) < len(vocab)
        _assert_same(_eager(model, image, vocab, mask), ours)
    if name == "vild_ensemble":  # the base mask is an input that matters
        vocab, mask = _vocabularies()[0]
        assert not torch.equal(
            _call(exported, name, image, vocab, mask)["scores"],
            _call(exported, name, image, vocab, ~mask)["scores"],
        )


def test_scripted_model_takes_other_image_sizes(train_vocab):
    model = _model("vild", train_vocab)
    exported = export_model(model, "scripting")
    vocab, mask = _vocabularies()[1]
    image = _image(seed=3, height=128, width=80)
    _assert_same(_eager(model, image, vocab, mask), _call(exported, "vild", image, vocab, mask))


RELOAD = r"""
import sys, torch, torchvision  # nothing else: no detectron2, no vild_d2
module = torch.jit.load(sys.argv[1])
inputs = torch.load(sys.argv[2])
out = module(*inputs)
assert isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values())
torch.save(out, sys.argv[3])
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("detectron2", "vild_d2", "fvcore"))
assert not bad, bad
"""


@pytest.mark.parametrize("method", ["scripting", "tracing"])
@pytest.mark.parametrize("name", ["vild", "vild_ensemble"])
def test_export_tool_output_reloads_with_torch_only(name, method, train_vocab, tmp_path):
    export_main = load_script("tools/export_model.py").main

    model = _model(name, train_vocab)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    image = _image()
    sample = tmp_path / "sample.png"
    from PIL import Image

    Image.fromarray(image.permute(1, 2, 0).numpy().astype(np.uint8)[:, :, ::-1]).save(
        sample
    )  # BGR -> RGB file
    assert (
        export_main(
            [
                "--config-file",
                CONFIGS[name],
                "--export-method",
                method,
                "--output",
                str(tmp_path / "out"),
                "--sample-image",
                str(sample),
                *_opts(train_vocab),
                "MODEL.WEIGHTS",
                str(tmp_path / "model.pth"),
            ]
        )
        == 0
    )
    ts = tmp_path / "out" / "model.ts"
    vocab, mask = _vocabularies()[0]
    inputs = (image, vocab, mask) if name == "vild_ensemble" else (image, vocab)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(ts),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same(_eager(model, image, vocab, mask), torch.load(tmp_path / "out.pt"))
    # what inference around the module needs travels inside the file
    extra = {"vild_d2.json": ""}
    torch.jit.load(str(ts), _extra_files=extra)
    info = json.loads(extra["vild_d2.json"])
    assert info["embed_dim"] == D and info["ensemble"] == (name == "vild_ensemble")
    assert info["export_method"] == method and info["input_format"] == "BGR"
    assert info["format_version"] == 2 and info["tf1_resize_test"] is False


def test_export_errors(train_vocab, tmp_path, capsys):
    export_main = load_script("tools/export_model.py").main

    stock = build_model(
        load_config(
            TINY_CONFIG, ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
        )
    ).eval()
    with pytest.raises(ExportError, match="only ViLD models"):
        export_model(stock, "scripting")
    with pytest.raises(ExportError, match="unknown export method 'onnx'"):
        export_model(_model("vild", train_vocab), "onnx")
    with pytest.raises(ExportError, match="tracing needs an example image"):
        export_model(_model("vild", train_vocab), "tracing")
    code = export_main(
        [
            "--config-file",
            CONFIGS["vild"],
            "--output",
            str(tmp_path / "out"),
            *_opts(train_vocab),
            "MODEL.WEIGHTS",
            str(tmp_path / "missing.pth"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "missing.pth" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_classifier_is_one_scriptable_module(train_vocab):
    model = _model("vild_ensemble", train_vocab)
    classifiers = [m for m in model.modules() if isinstance(m, ZeroShotClassifier)]
    assert len(classifiers) == 2  # the text head's (with background) and the image head's
    assert [c.use_background for c in classifiers] == [True, False]
    scripted = torch.jit.script(classifiers[0])
    x = torch.randn(5, classifiers[0].projection.in_features)
    vocab = F.normalize(torch.randn(9, D), dim=1)
    assert torch.allclose(scripted(x, vocab), classifiers[0](x, vocab))
    assert scripted(x, vocab).shape == (5, 10)
    # set_vocabulary reaches both classifiers
    model.set_vocabulary(vocab)
    assert all(torch.allclose(c.test_class_embeddings, vocab, atol=1e-6) for c in classifiers)


BAD_INPUTS = r"""
import sys, torch, torchvision  # a fresh process with nothing else, as a user of the file
module = torch.jit.load(sys.argv[1])
D = int(sys.argv[2])
image, vocab = torch.rand(3, 64, 80) * 255, torch.randn(5, D)
nan_row = vocab.clone()
nan_row[2, 0] = float("nan")
cases = {
    "nan row": (image, nan_row, torch.zeros(5, dtype=torch.bool)),
    "empty vocabulary": (image, torch.zeros(0, D), torch.zeros(0, dtype=torch.bool)),
    "wrong D": (image, torch.randn(5, D + 3), torch.zeros(5, dtype=torch.bool)),
    "zero pixels": (torch.zeros(3, 0, 80), vocab, torch.zeros(5, dtype=torch.bool)),
    "grey image": (torch.rand(64, 80), vocab, torch.zeros(5, dtype=torch.bool)),
    "base mask of another length": (image, vocab, torch.zeros(4, dtype=torch.bool)),
}
for name, args in cases.items():
    if sys.argv[3] != "vild_ensemble":
        args = args[:2]
        if name == "base mask of another length":
            continue
    try:
        module(*args)
    except Exception as e:
        raised = [l for l in str(e).splitlines() if "ValueError: " in l]
        print(name, "|", raised[-1].replace("builtins.", "") if raised else "NO VALUE ERROR")
    else:
        print(name, "|", "NO ERROR")
"""


@pytest.mark.parametrize("name, method", [("vild", "scripting"), ("vild_ensemble", "tracing")])
def test_exported_module_refuses_bad_inputs_saying_what_it_expected(
    name, method, train_vocab, tmp_path
):
    model = _model(name, train_vocab)
    path = str(tmp_path / "model.ts")
    torch.jit.save(export_model(model, method, _image()), path)
    proc = subprocess.run(
        [sys.executable, "-c", BAD_INPUTS, path, str(D), name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = dict(line.split(" | ", 1) for line in proc.stdout.strip().splitlines())
    assert said["nan row"] == "ValueError: class_embeddings: rows [2] hold NaN or Inf"
    assert (
        said["empty vocabulary"] == "ValueError: class_embeddings: the vocabulary is empty (C = 0)"
    )
    assert said["wrong D"] == (
        f"ValueError: class_embeddings: expected [C, {D}] (the model's D), got shape [5, {D + 3}]"
    )
    assert said["zero pixels"] == "ValueError: image: expected at least 1x1 pixels, got 0x80"
    assert (
        said["grey image"] == "ValueError: image: expected a [3, H, W] tensor, got shape [64, 80]"
    )
    if name == "vild_ensemble":
        assert said["base mask of another length"].startswith(
            "ValueError: base_mask: expected a bool tensor of shape [5] (one per class), got"
        )
