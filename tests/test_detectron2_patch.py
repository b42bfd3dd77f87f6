"""The install-time patch of detectron2 v0.6 (vild_d2/compat/detectron2_patch.py)."""

import os
import tarfile

import pytest

from vild_d2.compat import detectron2_patch as patch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDIST = os.path.join(ROOT, ".build", "pb1-detectron2-0.6.tar.gz")


def _mini_tree(root):
    """A tree holding exactly the upstream text each patch targets."""
    files = {"detectron2/__init__.py": '__version__ = "0.6"\n', "setup.py": "import torch\n"}
    for rel, _, old, _ in patch.TEXT_PATCHES:
        files[rel] = files.get(rel, "") + old
    files["detectron2/structures/masks.py"] = (
        "x = a.astype(np.bool)\ny = np.zeros(3, dtype=np.float)\nz = np.float32(1) + np.int64(2)\n"
        "w = np.bool_(1)\n"
    )
    for rel, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)


def test_patch_mini_tree_and_idempotent(tmp_path):
    _mini_tree(tmp_path)
    report = patch.patch_tree(str(tmp_path))
    assert len(report["text_patches"]) == len(patch.TEXT_PATCHES)
    masks = (tmp_path / "detectron2/structures/masks.py").read_text()
    assert (
        masks
        == "x = a.astype(bool)\ny = np.zeros(3, dtype=float)\nz = np.float32(1) + np.int64(2)\n"
        "w = np.bool_(1)\n"
    )
    transform = (tmp_path / "detectron2/data/transforms/transform.py").read_text()
    assert "Image.LINEAR" not in transform and "Image.BILINEAR" in transform
    assert "pkg_resources" not in (tmp_path / "detectron2/model_zoo/model_zoo.py").read_text()
    assert 'name="detectron2"' in (tmp_path / "setup.py").read_text()
    assert (tmp_path / "detectron2/_C.py").exists()
    assert "lr_scheduler.LRScheduler)" in (tmp_path / "detectron2/engine/hooks.py").read_text()
    assert (
        "sample(sorted(self._fallback_candidates)"
        in (tmp_path / "detectron2/data/common.py").read_text()
    )
    assert "_C.nms_rotated" in (tmp_path / "detectron2/layers/nms.py").read_text()

    snapshot = {p: p.read_text() for p in tmp_path.rglob("*.py")}
    again = patch.patch_tree(str(tmp_path))
    assert again["text_patches"] == [] and again["numpy_alias_files"] == []
    assert {p: p.read_text() for p in tmp_path.rglob("*.py")} == snapshot


def test_patch_refuses_unknown_tree(tmp_path):
    _mini_tree(tmp_path)
    (tmp_path / "detectron2/export/__init__.py").write_text("something else\n")
    with pytest.raises(patch.PatchError, match="export/__init__.py"):
        patch.patch_tree(str(tmp_path))
    (tmp_path / "detectron2/__init__.py").write_text('__version__ = "0.5"\n')
    with pytest.raises(patch.PatchError, match="0.5"):
        patch.patch_tree(str(tmp_path))


@pytest.mark.skipif(not os.path.isfile(SDIST), reason=f"{SDIST} absent (detectron2 was kept)")
def test_patch_real_sdist(tmp_path):
    with tarfile.open(SDIST) as tar:
        tar.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.iterdir()
    report = patch.patch_tree(str(tree))
    assert len(report["text_patches"]) == len(patch.TEXT_PATCHES)
    assert "detectron2/structures/masks.py" in report["numpy_alias_files"]
    for path in tree.rglob("*.py"):
        text = path.read_text()
        assert "Image.LINEAR" not in text, path
        assert not patch.NUMPY_ALIAS_RE.search(text), path
    configs = list((tree / "detectron2/model_zoo/configs").rglob("*.yaml"))
    assert len(configs) > 50


def _installed_is_patched():
    try:
        from detectron2 import _vild_d2_patch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _installed_is_patched(), reason="your own detectron2 build is in use")
def test_installed_detectron2_is_patched():
    import detectron2.export
    from detectron2 import _C
    from detectron2.data.transforms import transform
    from detectron2.model_zoo import get_config_file

    assert hasattr(detectron2.export, "scripting_with_instances")
    assert os.path.isfile(get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    with open(transform.__file__) as f:
        assert "Image.LINEAR" not in f.read()
    with pytest.raises(NotImplementedError, match="box_iou_rotated"):
        _C.box_iou_rotated(None, None)
    # The ops standard Mask R-CNN needs come from torchvision and work.
    import torch
    from detectron2.layers import ROIAlign, batched_nms

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long), 0.5)
    assert keep.tolist() == [0, 2]
    pooled = ROIAlign((2, 2), 1.0, 0, aligned=True)(
        torch.ones(1, 1, 8, 8), torch.tensor([[0, 0, 0, 4, 4.0]])
    )
    assert torch.allclose(pooled, torch.ones(1, 1, 2, 2))


@pytest.mark.skipif(not _installed_is_patched(), reason="your own detectron2 build is in use")
def test_installed_detectron2_fixes_of_later_upstream_bugs():
    """Two v0.6 bugs under torch 2 / Python 3.11 (fixed upstream later), and rotated ops' error."""
    import torch
    from detectron2.data.common import MapDataset
    from detectron2.engine.hooks import LRScheduler
    from detectron2.layers import nms_rotated

    # torch 2's stock schedulers are saved in checkpoints and restored on resume
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2])
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    hook = LRScheduler(optimizer, scheduler)
    state = hook.state_dict()
    assert state.get("last_epoch") == 3
    fresh = torch.optim.lr_scheduler.MultiStepLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), [2]
    )
    LRScheduler(fresh.optimizer, fresh).load_state_dict(state)
    assert fresh.last_epoch == 3
    # a mapper that returns None for an item falls back to another one (no TypeError on a set)
    data = MapDataset(list(range(5)), lambda x: None if x == 0 else x)
    assert data[0] in {1, 2, 3, 4}
    # rotated NMS without compiled ops: the stand-in's error naming the op
    with pytest.raises(NotImplementedError, match="nms_rotated"):
        nms_rotated(torch.zeros(2, 5), torch.ones(2), 0.5)


def test_clip_patch_imports_packaging_directly_and_is_idempotent(tmp_path):
    (tmp_path / "clip").mkdir()
    original = "import torch\nfrom pkg_resources import packaging\nv = packaging.version.parse\n"
    (tmp_path / "clip" / "clip.py").write_text(original)
    assert len(patch.apply_text_patches(str(tmp_path), patch.CLIP_TEXT_PATCHES)) == 1
    text = (tmp_path / "clip" / "clip.py").read_text()
    assert "pkg_resources" not in text.split("#")[0] and "import packaging.version" in text
    namespace = {}
    exec(text.replace("import torch\n", ""), namespace)  # the module's use still works
    assert str(namespace["v"]("1.7.1")) == "1.7.1"
    assert patch.apply_text_patches(str(tmp_path), patch.CLIP_TEXT_PATCHES) == []
    (tmp_path / "clip" / "clip.py").write_text("import something_else\n")
    with pytest.raises(patch.PatchError, match="clip.py"):
        patch.apply_text_patches(str(tmp_path), patch.CLIP_TEXT_PATCHES)
