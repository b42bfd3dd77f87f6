"""The TensorFlow checkpoint reader on the official code's own checkpoint, and on broken copies."""

import os
import shutil

import numpy as np
import pytest

from vild_d2.checkpoint import CheckpointFormatError, TFCheckpointReader, checkpoint_prefix

from .conftest import ORACLE, needs_shared
from .helpers.scripts import load_script

pytestmark = needs_shared


def test_every_variable_is_the_npz_array_bit_for_bit():
    reader = TFCheckpointReader(os.path.join(ORACLE, "model.ckpt"))
    expected = np.load(os.path.join(ORACLE, "variables.npz"))
    assert sorted(reader.variables()) == sorted(expected.files)
    assert len(expected.files) == 463
    for name in expected.files:
        array = reader.get_tensor(name)
        assert array.dtype == np.float32 and reader.dtype_name(name) == "float32"
        assert array.shape == expected[name].shape == reader.variables()[name]
        assert np.array_equal(array, expected[name]), name


@pytest.mark.parametrize(
    "given", ["model.ckpt", "model.ckpt.index", "", "model.ckpt.data-00000-of-00001"]
)
def test_prefix_index_folder_and_data_file_name_the_same_checkpoint(given):
    assert checkpoint_prefix(os.path.join(ORACLE, given)) == os.path.join(ORACLE, "model.ckpt")


def _copy(tmp_path):
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(os.path.join(ORACLE, "model.ckpt" + suffix), tmp_path / ("model.ckpt" + suffix))
    return tmp_path / "model.ckpt"


def _truncate(path, keep):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


def _flip_byte(path, where):
    data = bytearray(open(path, "rb").read())
    data[int(len(data) * where)] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _break(case, tmp_path):
    """A broken checkpoint of kind ``case``; returns (path given, file the error must name)."""
    if case == "missing":
        return str(tmp_path / "nothing"), "nothing"
    if case == "not a checkpoint":
        (tmp_path / "notes.index").write_text("a text file, not a checkpoint index\n" * 4)
        return str(tmp_path / "notes.index"), "notes.index"
    prefix = _copy(tmp_path)
    index, data = str(prefix) + ".index", str(prefix) + ".data-00000-of-00001"
    if case == "truncated index":
        _truncate(index, 0.5)
        return str(prefix), "model.ckpt.index"
    if case == "corrupt index":
        _flip_byte(index, 0.3)
        return str(prefix), "model.ckpt.index"
    if case == "truncated data":
        _truncate(data, 0.7)
        return str(prefix), "model.ckpt.data-00000-of-00001"
    if case == "corrupt data":
        _flip_byte(data, 0.5)
        return str(prefix), "model.ckpt"
    if case == "no data file":
        os.remove(data)
        return str(prefix), "model.ckpt.data-00000-of-00001"
    if case == "two checkpoints":  # in a folder of their own (the output goes beside it)
        folder = tmp_path / "checkpoints"
        folder.mkdir()
        for name in ("model.ckpt.index", "other.index"):
            shutil.copy(index, str(folder / name))
        return str(folder), "found 2"
    raise AssertionError(case)


CASES = [
    "missing",
    "not a checkpoint",
    "truncated index",
    "corrupt index",
    "truncated data",
    "corrupt data",
    "no data file",
    "two checkpoints",
]


@pytest.mark.parametrize("case", CASES)
def test_a_broken_checkpoint_fails_naming_the_file(case, tmp_path):
    path, named = _break(case, tmp_path)
    with pytest.raises(CheckpointFormatError) as info:
        reader = TFCheckpointReader(path)
        for name in reader.variables():
            reader.get_tensor(name)
    assert named in str(info.value)


@pytest.mark.parametrize("case", CASES)
def test_the_converter_says_so_in_one_line_and_writes_nothing(case, tmp_path, capsys):
    path, named = _break(case, tmp_path)
    out = tmp_path / "converted"
    code = load_script("tools/convert_official_checkpoint.py").main(
        [path, "--output", str(out), "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("convert_official_checkpoint.py: error:")
    assert named in err
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".converted")]  # no leftovers


def test_a_state_file_pointing_elsewhere_does_not_hide_the_one_checkpoint(tmp_path):
    """As a Saver writes it: the path where training ran, e.g. in a bucket."""
    import tarfile

    folder = tmp_path / "resnet50_vild"
    folder.mkdir()
    prefix = _copy(folder)
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "gs://bucket/run/model.ckpt-180000"\n'
        'all_model_checkpoint_paths: "gs://bucket/run/model.ckpt-180000"\n'
    )
    assert checkpoint_prefix(str(folder)) == str(prefix)
    archive = tmp_path / "resnet50_vild.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="resnet50_vild")
    out = tmp_path / "converted"
    tool = load_script("tools/convert_official_checkpoint.py")
    assert tool.main([str(archive), "--output", str(out), "--no-progress"]) == 0
    # with several checkpoints the state file chooses, by file name
    shutil.copy(str(prefix) + ".index", folder / "model.ckpt-180000.index")
    assert checkpoint_prefix(str(folder)) == str(folder / "model.ckpt-180000")
    (folder / "checkpoint").write_text('model_checkpoint_path: "gs://bucket/run/other"\n')
    with pytest.raises(CheckpointFormatError, match="found 2: .*names other, which is not"):
        checkpoint_prefix(str(folder))
