"""
tools/precompute_region_embeddings.py end to end, on a generated LVIS-format world and a
tiny random CLIP: RPN and proposals-file sources, one vs two CPU workers (gloo), kill and
resume, bad boxes counted, one-line errors that leave nothing half-written.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vild_d2.data.region_store import RegionStore, RegionStoreError
from vild_d2.data.region_store.layout import read_index, shard_files, shard_name

from .conftest import ROOT, TINY_CLIP_SHAPE
from .helpers.scripts import load_script

TOOL = os.path.join(ROOT, "tools", "precompute_region_embeddings.py")
RPN_CONFIG = os.path.join(ROOT, "configs", "shapes_world", "rpn_R_18_FPN_tiny.yaml")
NUM_IMAGES = 24


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip_checkpoint):
    """A generated world, a proposals file with awkward boxes, and the tiny teacher."""
    from vild_d2.data.datasets import load_image_list
    from vild_d2.world.spec import ShapesWorldSpec
    from vild_d2.world.splits import generate_shapes_world

    root = str(tmp_path_factory.mktemp("precompute_world"))
    spec = ShapesWorldSpec(
        seed=3, num_train=NUM_IMAGES, num_val=1, image_size=96, object_size=(12, 28)
    )
    json_file = generate_shapes_world(root, spec)["train"]
    images = load_image_list(json_file, root)
    rng = np.random.default_rng(0)
    ids, boxes, logits = [], [], []
    expected = {"clipped": 0, "dropped": 0}
    for img in images:
        h, w = img["height"], img["width"]
        xy = rng.uniform(0, [w - 20, h - 20], size=(120, 2))
        wh = rng.uniform(4, 40, size=(120, 2))
        b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)
        # awkward ones: out across the border (clipped), wholly outside and of zero area (skipped)
        b[0] = [-10, -5, 30, 40]
        b[1] = [w + 5, 10, w + 50, 60]
        b[2] = [20, 20, 20, 50]
        expected["clipped"] += 2  # b[0] and b[1] (which clips to zero width, then is skipped)
        expected["dropped"] += 2  # b[1], b[2]
        ids.append(img["image_id"])
        boxes.append(b.astype(np.float32))
        logits.append(np.linspace(10, 0, len(b)).astype(np.float32))  # keep the given order
    proposals = os.path.join(root, "proposals.pkl")
    with open(proposals, "wb") as f:
        pickle.dump({"ids": ids, "boxes": boxes, "objectness_logits": logits}, f)
    return {
        "root": root,
        "json": json_file,
        "images": images,
        "proposals": proposals,
        "expected": expected,
        "teacher": tiny_clip_checkpoint["path"],
    }


def _args(world, output, *extra, source="file"):
    args = [
        "--teacher",
        world["teacher"],
        "--json",
        world["json"],
        "--image-root",
        world["root"],
        "--output",
        str(output),
        "--device",
        "cpu",
    ]
    if source == "file":
        args += ["--proposals-file", world["proposals"], "--nms-thresh", "1.0"]
    elif source == "rpn":  # random weights: the tests check mechanics, not proposals
        args += ["--config-file", RPN_CONFIG, "--allow-untrained-rpn"]
    return args + list(extra)


def _run(args, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, TOOL] + args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kw,
    )


def _summary(stdout):
    line = [l for l in stdout.splitlines() if l.startswith("summary: ")][-1]
    return json.loads(line[len("summary: ") :])


def _assert_same_store(a_dir, b_dir, exact=True):
    """
    exact: byte-identical boxes and embeddings (what resume promises).
    not exact: runs with other thread counts (1 vs 2 workers), where the RPN's float sums
    differ in the last bits (boxes by ~1e-6 px) and near-tied objectness scores may swap
    order or the box at the M-th place; each box must then have a twin within 1e-3 px
    whose embedding agrees within fp16's precision, for all but 2% of the regions.
    """
    a, b = RegionStore(str(a_dir)), RegionStore(str(b_dir))
    assert sorted(a.image_ids()) == sorted(b.image_ids())
    total = matched = 0
    for image_id in a.image_ids():
        ra, rb = a.get(image_id), b.get(image_id)
        assert (ra.height, ra.width) == (rb.height, rb.width)
        if exact:
            np.testing.assert_array_equal(ra.boxes, rb.boxes)
            np.testing.assert_array_equal(ra.embeddings, rb.embeddings)
            continue
        assert abs(len(ra.boxes) - len(rb.boxes)) <= 1, image_id
        dist = np.abs(ra.boxes[:, None, :] - rb.boxes[None, :, :]).max(axis=2)  # [Ma, Mb] px
        for i in range(len(ra.boxes)):
            j = int(dist[i].argmin()) if dist.shape[1] else -1
            total += 1
            if j >= 0 and dist[i, j] <= 1e-3:
                matched += 1
                np.testing.assert_allclose(
                    ra.embeddings[i].astype(np.float32),
                    rb.embeddings[j].astype(np.float32),
                    atol=2e-3,
                )
    if not exact:
        assert matched >= 0.98 * total, f"{matched} of {total} regions have a twin"


def _store_files(out) -> dict:
    """The store's files and their times (the lock file is rewritten by every run)."""
    return {p: os.path.getmtime(os.path.join(out, p)) for p in os.listdir(out) if p != ".lock"}


@pytest.fixture(scope="module")
def reference_store(world, tmp_path_factory):
    """One uninterrupted single-worker run over the proposals file."""
    out = tmp_path_factory.mktemp("reference") / "store"
    proc = _run(_args(world, out, "--num-regions", "100"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"dir": out, "summary": _summary(proc.stdout)}


def test_file_proposals_fill_the_store_and_count_bad_boxes(world, reference_store):
    s = reference_store["summary"]
    assert s["images"] == s["store_images"] == NUM_IMAGES and s["already_done"] == 0
    assert s["boxes_clipped"] == world["expected"]["clipped"]
    assert s["boxes_dropped"] == world["expected"]["dropped"]
    store = RegionStore(str(reference_store["dir"]))
    store.verify()
    with open(world["proposals"], "rb") as f:
        data = pickle.load(f)
    for image_id, boxes in zip(data["ids"], data["boxes"]):
        r = store.get(image_id)
        assert len(r.boxes) == 100  # M of the 118 valid ones, in objectness order
        # the first valid box is the clipped b[0]; then b[3:] in the file's order
        np.testing.assert_array_equal(r.boxes[0], [0, 0, 30, 40])
        np.testing.assert_allclose(r.boxes[1:], boxes[3:102], atol=1e-4)
        assert (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()
        np.testing.assert_allclose(
            np.linalg.norm(r.embeddings.astype(np.float32), axis=1), 1, atol=2e-3
        )
    assert store.manifest["extra"]["num_regions"] == 100


def test_kill_and_resume_equals_uninterrupted(world, reference_store, tmp_path):
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, TOOL] + _args(world, out, "--num-regions", "100", "--commit-every", "1"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    index = shard_files(str(out), shard_name(0, 1))["index"]
    deadline = time.time() + 300
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(index):
            try:
                committed = len(np.load(index))
            except (ValueError, OSError):
                committed = 0  # caught mid-replace
            if committed >= 4:
                break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(read_index(index, "test"))
    assert 4 <= done_at_kill < NUM_IMAGES, "the kill should land mid-run"
    with pytest.raises(RegionStoreError, match="not"):
        RegionStore(
            str(out)
        )  # a killed run leaves an open shard, never a store that reads as complete

    resumed = _run(_args(world, out, "--num-regions", "100", "--commit-every", "1"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    s = _summary(resumed.stdout)
    assert s["already_done"] == done_at_kill  # finished images were not recomputed
    assert s["images"] == NUM_IMAGES - done_at_kill
    _assert_same_store(reference_store["dir"], out, exact=True)
    ref = json.load(open(os.path.join(reference_store["dir"], "manifest.json")))
    new = json.load(open(os.path.join(out, "manifest.json")))
    assert ref["shards"] == new["shards"]  # byte-identical files (sha256)


def test_two_cpu_workers_equal_one(world, tmp_path):
    stores = {}
    for workers in (1, 2):
        out = tmp_path / f"store_{workers}"
        proc = _run(
            _args(world, out, "--num-regions", "40", "--num-gpus", str(workers), source="rpn")
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _summary(proc.stdout)["store_images"] == NUM_IMAGES
        stores[workers] = out
    manifest = json.load(open(os.path.join(stores[2], "manifest.json")))
    assert manifest["num_shards"] == 2 and all(
        e["num_images"] == NUM_IMAGES // 2 for e in manifest["shards"].values()
    )
    _assert_same_store(stores[1], stores[2], exact=False)
    r = RegionStore(str(stores[2])).get(world["images"][0]["image_id"])
    assert 0 < len(r.boxes) <= 40


def _load_tool():
    return load_script("tools/precompute_region_embeddings.py")


@pytest.fixture(scope="module")
def tool():
    return _load_tool()


def test_errors_are_one_line_and_name_the_culprit(world, tool, tmp_path, capsys):
    def error(args):
        assert tool.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, if any
        assert err.startswith("precompute_region_embeddings.py: error: "), err
        return err

    # an unreadable image, named by id and file; the images before it stay committed
    root = tmp_path / "broken"
    shutil.copytree(world["root"], root)
    bad = sorted(world["images"], key=lambda d: d["image_id"])[5]
    bad_file = os.path.join(root, os.path.relpath(bad["file_name"], world["root"]))
    with open(bad_file, "wb") as f:
        f.write(b"not a jpeg")
    out = tmp_path / "store_broken"
    args = _args(world, out, "--commit-every", "1")
    args[args.index("--image-root") + 1] = str(root)
    err = error(args)
    assert f"image id {bad['image_id']}" in err and bad_file in err
    assert len(read_index(shard_files(str(out), shard_name(0, 1))["index"], "test")) == 5

    # a proposals file without some image
    with open(world["proposals"], "rb") as f:
        data = pickle.load(f)
    partial = tmp_path / "partial.pkl"
    with open(partial, "wb") as f:
        pickle.dump({k: v[1:] for k, v in data.items()}, f)
    args = _args(world, tmp_path / "store_partial")
    args[args.index("--proposals-file") + 1] = str(partial)
    assert str(data["ids"][0]) in error(args)

    # a teacher whose D differs from the existing store's (same checkpoint path, new weights)
    from vild_d2.teacher import build_clip, save_clip_checkpoint

    teacher = str(tmp_path / "teacher.pt")
    shutil.copy(world["teacher"], teacher)
    out = tmp_path / "store_d"
    args = _args(world, out, "--num-regions", "5")
    args[args.index("--teacher") + 1] = teacher
    assert tool.main(args) == 0
    capsys.readouterr()
    files_before = _store_files(out)
    save_clip_checkpoint(build_clip(seed=0, **dict(TINY_CLIP_SHAPE, embed_dim=64)), teacher)
    err = error(args)
    assert "embed_dim" in err and "64" in err and "32" in err
    # another teacher, or other settings, for an existing store
    assert "teacher" in error(_args(world, out, "--num-regions", "5"))
    save_clip_checkpoint(build_clip(seed=0, **TINY_CLIP_SHAPE), teacher)
    args[args.index("--num-regions") + 1] = "7"
    assert "num_regions = 5" in error(args)
    assert files_before == _store_files(out)

    # no proposal source, or two
    assert "proposal source" in error(_args(world, tmp_path / "s", source="none"))
    assert "proposal source" in error(_args(world, tmp_path / "s") + ["--config-file", RPN_CONFIG])
    # an RPN without weights is refused unless asked for, and nothing is written
    err = error(_args(world, tmp_path / "untrained", source="none") + ["--config-file", RPN_CONFIG])
    assert "no MODEL.WEIGHTS" in err and RPN_CONFIG in err and not (tmp_path / "untrained").exists()


def test_file_proposals_sort_nms_and_box_mode(tmp_path):
    from detectron2.structures import BoxMode

    from vild_d2.teacher.proposals import FileProposals, ProposalError

    xywh = np.array([[0, 0, 10, 10], [50, 50, 20, 20], [1, 1, 10, 10], [30, 0, 5, 5]], np.float32)
    path = tmp_path / "p.pkl"
    with open(path, "wb") as f:
        pickle.dump(
            {
                "ids": [7],
                "boxes": [xywh],
                "objectness_logits": [np.array([1.0, 3.0, 2.0, 0.5])],
                "bbox_mode": BoxMode.XYWH_ABS,
            },
            f,
        )
    boxes = FileProposals(str(path), nms_thresh=0.5)({"image_id": 7}, None)
    # best first; the box overlapping a better one at IoU 0.68 is suppressed; XYWH -> XYXY
    np.testing.assert_array_equal(boxes, [[50, 50, 70, 70], [1, 1, 11, 11], [30, 0, 35, 5]])
    assert len(FileProposals(str(path), nms_thresh=1.0)({"image_id": 7}, None)) == 4
    with pytest.raises(ProposalError, match="image id 8"):
        FileProposals(str(path)).check_covers([7, 8])


def test_only_meaningful_flags_and_overrides_after_scales(tool):
    args = tool.parse_args(
        [
            "--teacher",
            "t.pt",
            "--dataset",
            "d",
            "--output",
            "o",
            "--config-file",
            "c.yaml",
            "--scales",
            "1.0",
            "1.5",
            "MODEL.WEIGHTS",
            "w.pth",
            "MODEL.RPN.NMS_THRESH",
            "0.6",
        ]
    )
    assert args.scales == [1.0, 1.5]
    assert args.opts == ["MODEL.WEIGHTS", "w.pth", "MODEL.RPN.NMS_THRESH", "0.6"]
    assert tool.parse_args(["--teacher", "t", "--output", "o"]).opts == []
    for flag in ("--resume", "--eval-only"):  # train_net.py's, meaningless here: refused
        with pytest.raises(SystemExit) as e:
            tool.parse_args(["--teacher", "t", "--output", "o", flag])
        assert e.value.code == 2


def test_a_second_run_on_the_same_store_is_refused(world, tmp_path):
    """Two runs at once on one --output both exited 0 and left every shard twice as long."""
    from vild_d2.utils.folder_lock import lock_folder

    out = tmp_path / "store"
    holder = lock_folder(str(out), "the first run")  # a run in progress holds the store
    try:
        second = _run(_args(world, out, "--num-regions", "100"))
    finally:
        holder.close()
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr[-2000:]
    assert f"{out} is in use by pid {os.getpid()} (the first run)" in second.stderr
    assert os.listdir(out) == [".lock"]  # it wrote nothing
    assert _run(_args(world, out, "--num-regions", "100")).returncode == 0  # once released


def test_a_store_of_other_images_is_refused(world, reference_store, tmp_path):
    """A regenerated dataset with the same name, ids and sizes was accepted by training."""
    from PIL import Image

    from vild_d2.data.datasets import load_image_list
    from vild_d2.data.region_store.images import IMAGES_FILE, check_images_match

    root = tmp_path / "world"  # a copy of the world, its store, then the world regenerated
    shutil.copytree(world["root"], root)
    copy = dict(world, root=str(root), json=world["json"].replace(world["root"], str(root)))
    store = tmp_path / "store"
    assert _run(_args(copy, store, "--num-regions", "10")).returncode == 0
    assert (store / IMAGES_FILE).is_file()
    images = load_image_list(copy["json"], str(root))
    check_images_match(str(store), images, "the world")  # the images it was made of
    first = images[0]  # regenerated: same name, id and size, another picture
    noise = np.random.default_rng(1).integers(0, 255, (first["height"], first["width"], 3))
    Image.fromarray(noise.astype(np.uint8)).save(first["file_name"])
    message = f"computed for other images: image {first['image_id']} was"
    with pytest.raises(RegionStoreError, match=message):
        check_images_match(str(store), images, "DATASETS.TRAIN")
    done = _run(_args(copy, store, "--num-regions", "10"))  # nor will the tool resume it
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
