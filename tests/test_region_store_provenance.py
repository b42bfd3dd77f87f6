"""
Region stores cannot go stale or be read corrupted: every shard
records what made it (teacher and proposals, with content hashes) and the real tool
refuses to extend it with anything else, manifest or not; every read checks its crc32.
"""

import json
import os

import numpy as np
import pytest

from vild_d2.data.region_store import RegionStore, RegionStoreError
from vild_d2.data.region_store.layout import MANIFEST, read_index, shard_files
from vild_d2.teacher import build_clip, save_clip_checkpoint

from .conftest import TINY_CLIP_SHAPE
from .test_precompute_regions_tool import _args, _run, world  # noqa: F401  (the fixture)


@pytest.fixture()
def store(world, tmp_path):  # noqa: F811
    """A finished store (4 regions per image) made with a teacher copied to tmp_path."""
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(open(world["teacher"], "rb").read())
    out = tmp_path / "store"
    w = dict(world, teacher=str(teacher))
    proc = _run(_args(w, out, "--num-regions", "4"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"world": w, "out": out, "teacher": teacher}


def _shard_bytes(out):
    files = shard_files(str(out), "shard-00000-of-00001")
    return {k: open(files[k], "rb").read() for k in ("embeddings", "boxes", "index")}


def test_every_shard_records_what_made_it(store):
    header = json.loads(
        open(shard_files(str(store["out"]), "shard-00000-of-00001")["header"]).read()
    )
    from vild_d2.data.region_store.layout import file_digest

    assert header["teacher_sha256"] == file_digest(str(store["teacher"]))
    assert header["proposals_sha256"] == file_digest(store["world"]["proposals"])
    assert header["embed_dim"] == TINY_CLIP_SHAPE["embed_dim"] and header["crop_scales"] == [
        1.0,
        1.5,
    ]


def test_a_teacher_retrained_at_the_same_path_is_refused(store):
    before = _shard_bytes(store["out"])
    save_clip_checkpoint(
        build_clip(seed=7, **TINY_CLIP_SHAPE), str(store["teacher"])
    )  # same path, new weights
    proc = _run(_args(store["world"], store["out"], "--num-regions", "4"))
    assert proc.returncode == 2 and "teacher_sha256" in proc.stderr, proc.stderr[-2000:]
    assert _shard_bytes(store["out"]) == before


def test_with_the_manifest_lost_another_teacher_is_refused_by_the_shard(store):
    before = _shard_bytes(store["out"])
    os.remove(store["out"] / MANIFEST)
    save_clip_checkpoint(build_clip(seed=7, **TINY_CLIP_SHAPE), str(store["teacher"]))
    proc = _run(_args(store["world"], store["out"], "--num-regions", "4"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        "was written with teacher_sha256" in proc.stderr and "shard-00000-of-00001" in proc.stderr
    )
    assert _shard_bytes(store["out"]) == before


def test_a_manifest_that_claims_other_settings_is_refused_on_open(store):
    path = store["out"] / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["extra"]["teacher_sha256"] = (
        "0" * 64
    )  # as a tool that rewrote the manifest would leave it
    path.write_text(json.dumps(manifest))
    with pytest.raises(RegionStoreError, match="was written with teacher_sha256"):
        RegionStore(str(store["out"]))


def test_a_corrupted_region_fails_when_read(store):
    s = RegionStore(str(store["out"]))
    index = read_index(shard_files(str(store["out"]), "shard-00000-of-00001")["index"], "test")
    victim = int(index["image_id"][3])
    row = int(index["start"][3])
    emb_file = shard_files(str(store["out"]), "shard-00000-of-00001")["embeddings"]
    data = bytearray(open(emb_file, "rb").read())
    offset = row * s.embed_dim * 2 + 5  # one byte inside the victim's first embedding (fp16)
    data[offset] ^= 0x40
    open(emb_file, "wb").write(bytes(data))  # same size: only a checksum can tell
    s = RegionStore(str(store["out"]))
    s.get(int(index["image_id"][0]))  # the others read fine
    with pytest.raises(RegionStoreError, match=rf"image id {victim}: regions fail their crc32"):
        s.get(victim)
    np.testing.assert_array_equal(
        s.get(victim, check=False).boxes.shape, (len(s.get(victim, check=False).boxes), 4)
    )
