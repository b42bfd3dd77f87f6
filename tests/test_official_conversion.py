"""
tools/convert_official_checkpoint.py: the released graphs' full variable lists (values
random) and the oracle's real TF checkpoint convert with every variable mapped and load
into the matching configs/LVIS-OV-official model; other checkpoints fail in one line.
"""

import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from vild_d2.checkpoint import ConversionError, convert_variables, infer_architecture
from vild_d2.config import load_config

from .conftest import OFFICIAL, ORACLE, ROOT, needs_shared
from .helpers.scripts import load_script

pytestmark = needs_shared

HEAD = "frcnn_layer_0/fast_rcnn_head/"


def _read_shapes(path):
    """{variable: shape} of a variable list of the oracle (name, shape and dtype per line)."""
    shapes = {}
    with open(path) as f:
        for line in f:
            variable, shape, _ = line.rstrip("\n").split("\t")
            shapes[variable] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    return shapes


def _variable_list(name):
    return _read_shapes(os.path.join(OFFICIAL, f"variables_{name}.txt"))


def _random_reader(shapes):
    rng = np.random.default_rng(0)
    return lambda name: rng.standard_normal(shapes[name], dtype=np.float32)


@pytest.mark.parametrize(
    "name, depth, ensemble, variables",
    [
        ("r50_vild", 50, False, 425),
        ("r50_vild_ensemble", 50, True, 463),
        ("r152_vild", 152, False, 935),
        ("r152_vild_ensemble", 152, True, 973),
    ],
)
def test_released_graph_converts_whole_and_loads_into_its_config(name, depth, ensemble, variables):
    shapes = _variable_list(name)
    assert len(shapes) == variables
    values = sum(int(np.prod(s)) for s in shapes.values())
    # what a training checkpoint holds beside the weights: skipped, not mapped
    shapes["global_step"] = ()
    shapes["fpn/l2/kernel/Momentum"] = shapes["fpn/l2/kernel"]
    state, vocabulary, arch = convert_variables(shapes, _random_reader(shapes))
    assert (arch.depth, arch.ensemble) == (depth, ensemble)
    assert vocabulary.shape == (1203, 512)
    assert arch.fpn_channels == 256 and arch.box_fc_dims == [1024, 1024]
    assert arch.rpn_conv_dims == [256, 256] and arch.pooler_resolution == 7
    mapped = variables - 1  # class-predict becomes the vocabulary file
    assert len(state) == mapped
    assert sum(v.numel() for v in state.values()) + vocabulary.size == values
    config = os.path.join(ROOT, "configs", "LVIS-OV-official", f"{arch.name}.yaml")
    assert os.path.isfile(config)
    model = _model(config, arch, vocabulary)
    result = model.load_state_dict(state, strict=False)
    assert [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] == []
    assert result.unexpected_keys == []


def _model(config, arch, vocabulary, tmp_dir="/tmp"):
    path = os.path.join(tmp_dir, f"vild_d2_test_vocabulary_{os.getpid()}.npy")
    np.save(path, vocabulary)
    try:
        opts = arch.config_overrides() + [
            "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", path, "MODEL.VILD.TEST_TEXT_EMBEDDINGS", path,
            "DATASETS.TRAIN", "()", "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu",
        ]  # fmt: skip
        return build_model(load_config(config, opts))
    finally:
        os.remove(path)


def _small_shapes():
    return _read_shapes(os.path.join(ORACLE, "variables.txt"))


def test_the_oracles_architecture_is_read_from_its_variables():
    arch = infer_architecture(_small_shapes())
    assert (arch.depth, arch.ensemble, arch.num_classes, arch.embed_dim) == (50, True, 20, 512)
    assert (arch.stem_channels, arch.res2_channels, arch.bottleneck_channels) == (8, 32, 8)
    assert arch.fpn_channels == 64 and arch.rpn_conv_dims == [64, 64]
    assert arch.box_conv_dims == [32] * 4 and arch.box_fc_dims == [128, 128]
    assert arch.mask_conv_dims == [32] * 4 and arch.pooler_resolution == 7


def _drop(shapes, name):
    return {k: v for k, v in shapes.items() if k != name}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: {**s, "fpn/p7/kernel": (3, 3, 64, 64)}, "fpn/p7/kernel"),
        (lambda s: _drop(s, "fpn/p6/bias"), "fpn/p6/bias"),
        (lambda s: _drop(s, HEAD + "class-predict/kernel"), "not an official ViLD checkpoint"),
        (lambda s: {k: v for k, v in s.items() if not k.startswith("resnet50/")}, "ResNet"),
        (lambda s: {**s, HEAD + "box-predict/kernel": (128, 84)}, "class-specific box regression"),
        (
            lambda s: {**s, "mask_head/mask_fcn_logits/kernel": (1, 1, 32, 20)},
            "class-specific masks",
        ),
    ],
    ids=["unknown variable", "missing variable", "another model", "no resnet", "boxes", "masks"],
)
def test_a_checkpoint_of_another_layout_is_refused_naming_why(edit, message):
    shapes = edit(_small_shapes())
    with pytest.raises(ConversionError, match=message.replace("(", r"\(")):
        convert_variables(shapes, _random_reader(shapes))


def test_the_tool_converts_the_real_tf_checkpoint(converted_oracle):
    files = sorted(os.listdir(converted_oracle))
    assert files == [
        ".vild_d2_output", "class_embeddings.json", "class_embeddings.npy", "config.yaml",
        "conversion.json", "model_final.pth",
    ]  # fmt: skip
    with open(os.path.join(converted_oracle, "class_embeddings.json")) as f:
        assert json.load(f)["teacher"] == "ViT-B/32"  # the CLIP that embeds words for it
    with open(os.path.join(converted_oracle, "conversion.json")) as f:
        report = json.load(f)
    assert report["model"] == "vild_ensemble_R_50_FPN" and report["variables"] == 463
    assert report["weights"] == 462 and report["vocabulary"] == [20, 512]
    vocabulary = np.load(os.path.join(converted_oracle, "class_embeddings.npy"))
    kernel = np.load(os.path.join(ORACLE, "variables.npz"))[HEAD + "class-predict/kernel"]
    assert np.array_equal(vocabulary, kernel.T)
    cfg = load_config(os.path.join(converted_oracle, "config.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "OfficialViLDRCNN" and cfg.MODEL.VILD.ENSEMBLE
    assert cfg.MODEL.WEIGHTS == os.path.join(converted_oracle, "model_final.pth")
    assert cfg.MODEL.RESNETS.STEM_OUT_CHANNELS == 8 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20
    state = torch.load(cfg.MODEL.WEIGHTS, map_location="cpu", weights_only=True)["model"]
    npz = np.load(os.path.join(ORACLE, "variables.npz"))
    # spot checks of the layout rules: HWIO -> OIHW, fc6 rows (h, w, c) -> (c, h, w), deltas
    stem = npz["resnet50/conv2d/kernel"].transpose(3, 2, 0, 1)
    assert np.array_equal(state["backbone.bottom_up.stem.conv1.weight"].numpy(), stem)
    fc6 = npz[HEAD + "fc6/kernel"].reshape(7, 7, 32, 128).transpose(3, 2, 0, 1).reshape(128, -1)
    assert np.array_equal(state["roi_heads.box_head.fcs.0.weight"].numpy(), fc6)
    box = npz[HEAD + "box-predict/bias"]
    assert np.array_equal(
        state["roi_heads.box_predictor.bbox_pred.bias"].numpy(), box[[1, 0, 3, 2]]
    )


def test_a_downloaded_tar_gz_converts_like_its_folder(converted_oracle, tmp_path):
    archive = tmp_path / "resnet50_vild_ensemble.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for suffix in (".index", ".data-00000-of-00001"):
            tar.add(os.path.join(ORACLE, "model.ckpt" + suffix), f"small/model.ckpt{suffix}")
    out = tmp_path / "converted"
    tool = load_script("tools/convert_official_checkpoint.py")
    assert tool.main([str(archive), "--output", str(out), "--no-progress"]) == 0
    ours = torch.load(out / "model_final.pth", weights_only=True)["model"]
    theirs = torch.load(os.path.join(converted_oracle, "model_final.pth"), weights_only=True)[
        "model"
    ]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_overwrite_replaces_only_a_folder_the_converter_wrote(tmp_path, capsys):
    tool = load_script("tools/convert_official_checkpoint.py")
    source = os.path.join(ORACLE, "model.ckpt")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mine.txt").write_text("keep me")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    src = tmp_path / "src"  # an unpacked release: the folder of the checkpoint's files
    shutil.copytree(ORACLE, src)
    prefix = src / "model.ckpt"
    for given, output, message in [
        (prefix, mine, "was not written by convert_official_checkpoint.py"),
        (prefix, a_file, "is a file, not a folder"),
        (prefix, src, "holds the input"),  # the checkpoint's own folder
        (src, src / "converted", "is inside the input"),  # the unpacked folder as the source
    ]:
        args = [str(given), "--output", str(output), "--no-progress", "--overwrite"]
        assert tool.main(args) == 2, output
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert (mine / "mine.txt").read_text() == "keep me" and a_file.read_text() == "keep me"
    assert sorted(os.listdir(src)) == sorted(os.listdir(ORACLE))
    assert sorted(os.listdir(tmp_path)) == ["a_file", "mine", "src"]  # nothing hidden left
    out = tmp_path / "converted"
    assert tool.main([source, "--output", str(out), "--no-progress"]) == 0
    assert tool.main([source, "--output", str(out), "--no-progress"]) == 2
    assert "add --overwrite" in capsys.readouterr().err
    assert tool.main([source, "--output", str(out), "--no-progress", "--overwrite"]) == 0
    assert "model_final.pth" in os.listdir(out)


def test_the_tool_refuses_another_models_variables_in_one_line(tmp_path, capsys):
    npz = np.load(os.path.join(ORACLE, "variables.npz"))
    other = tmp_path / "mask_rcnn.npz"  # a Mask R-CNN of the same code: no text classifier
    np.savez(other, **{k: npz[k] for k in npz.files if "class-predict" not in k})
    out = tmp_path / "converted"
    tool = load_script("tools/convert_official_checkpoint.py")
    assert tool.main([str(other), "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mask_rcnn.npz: not an official ViLD checkpoint" in err
    assert "no variable " + HEAD + "class-predict/kernel" in err
    assert not out.exists()


def test_damaged_weights_are_refused_naming_the_tf_variable():
    """NaN or Inf weights converted silently (a model that detects nothing, rc 0)."""
    shapes = _small_shapes()
    good = _random_reader(shapes)
    for broken, dtype, message in [
        (HEAD + "class-predict/kernel", np.float32, "3 of its .* values are NaN or infinite"),
        ("resnet50/conv2d/kernel", np.float32, "3 of its .* values are NaN or infinite"),
        ("resnet50/conv2d/kernel", np.int64, "a weight of dtype int64, not a float"),
    ]:

        def read(name, broken=broken, dtype=dtype):
            value = good(name)
            if name == broken:
                value = value.astype(dtype)
                value.flat[:3] = [np.nan, np.inf, -np.inf] if dtype == np.float32 else 7
            return value

        with pytest.raises(ConversionError, match=re.escape(broken) + ": " + message):
            convert_variables(shapes, read)


def test_ema_shadows_are_said_and_can_be_converted():
    """Shadow variables were dropped as optimiser state without a word."""
    shapes = _small_shapes()
    kernel = HEAD + "class-predict/kernel"
    with_ema = dict(shapes, **{kernel + "/ExponentialMovingAverage": shapes[kernel]})
    read = _random_reader(with_ema)
    values = {n: read(n) for n in with_ema}
    _, raw, _ = convert_variables(with_ema, values.__getitem__)
    _, averaged, _ = convert_variables(with_ema, values.__getitem__, use_ema=True)
    assert np.array_equal(raw, values[kernel].T)
    assert np.array_equal(averaged, values[kernel + "/ExponentialMovingAverage"].T)
    with pytest.raises(ConversionError, match="no ExponentialMovingAverage"):
        convert_variables(shapes, _random_reader(shapes), use_ema=True)


def test_converter_errors_name_the_users_file_and_the_real_cause(tmp_path, capsys):
    import tarfile

    tool = load_script("tools/convert_official_checkpoint.py")
    variables = dict(np.load(os.path.join(ORACLE, "variables.npz")))

    def error(source):
        code = tool.main([str(source), "--output", str(tmp_path / "out"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        return err

    # a wrongly shaped variable: one line naming TF variables (it was a 23-line traceback)
    wrong = dict(variables, **{"resnet50/conv2d_1/kernel": np.zeros((1, 1, 8, 7), np.float32)})
    np.savez(tmp_path / "wrong.npz", **wrong)
    assert "variables do not fit the widths" in error(tmp_path / "wrong.npz")
    # a .npz without a variable: the missing variable, not "not a readable .npz"
    np.savez(tmp_path / "short.npz", **{k: v for k, v in variables.items() if "rpn" not in k})
    err = error(tmp_path / "short.npz")
    assert "no variable rpn_head" in err and "not a readable" not in err
    # an archive with a damaged data file: the archive and its member, not a temporary folder
    folder = tmp_path / "release"
    folder.mkdir()
    for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        shutil.copy(os.path.join(ORACLE, name), folder / name)
    data = folder / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    archive = tmp_path / "release.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="release")
    err = error(archive)
    assert f"{archive}:release/model.ckpt" in err and "vild_official_" not in err
