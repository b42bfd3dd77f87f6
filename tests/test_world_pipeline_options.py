"""
The main job's command line: which world, size and output folder each option picks (no
stage runs here; the stages themselves: test_world_pipeline.py).
"""

import os

import pytest

from .helpers.scripts import load_script


@pytest.fixture(scope="module")
def tool():
    return load_script("tools/run_world_pipeline.py")


def test_the_default_run_keeps_its_folder_world_and_size(tool, monkeypatch):
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    args = tool.parse_args([])
    out, datasets = tool.output_folders(args)
    assert os.path.basename(out) == "world"
    assert datasets == os.path.join(tool.ROOT, "datasets")
    assert tool.pipeline_size(args) is tool.FULL


def test_more_val_images_change_only_val_and_get_their_own_world(tool):
    args = tool.parse_args(["--val-images", "100", "--seed", "7"])
    size = tool.pipeline_size(args)
    assert size.num_val == 100
    # every other number (what is trained, and on what) stays the full run's
    assert {k: v for k, v in vars(size).items() if k != "num_val"} == {
        k: v for k, v in vars(tool.FULL).items() if k != "num_val"
    }
    out, datasets = tool.output_folders(args)
    assert os.path.basename(out) == "world_seed7_val100"
    # its world lives apart: the default one (600 val images) would be refused as another
    assert datasets == os.path.join(out, "datasets")
    # the default number of val images names no other folder
    same = tool.parse_args(["--val-images", str(tool.FULL.num_val)])
    assert os.path.basename(tool.output_folders(same)[0]) == "world"
    quick = tool.parse_args(["--quick", "--val-images", "12"])
    assert tool.pipeline_size(quick).num_val == 12
    assert tool.pipeline_size(quick).num_train == tool.QUICK.num_train


def test_no_val_images_is_refused_by_name(tool, capsys):
    with pytest.raises(SystemExit):
        tool.parse_args(["--val-images", "0"])
    assert "--val-images must be at least 1, got 0" in capsys.readouterr().err
