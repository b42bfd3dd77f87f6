"""The region-embedding store: round trip, crash safety, and errors that name the culprit."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from vild_d2.data.region_store import (
    RegionStore,
    RegionStoreError,
    ShardWriter,
    create_region_store,
    finalize_region_store,
)
from vild_d2.data.region_store.layout import FORMAT_VERSION, shard_files

from .conftest import ROOT
from .helpers.region_store_job import DIM, image_regions

JOB = os.path.join(ROOT, "tests", "helpers", "region_store_job.py")


def _write_store(path, image_ids, num_shards=1, commit_every=3, dim=DIM):
    create_region_store(path, teacher="test", embed_dim=dim, num_shards=num_shards)
    for shard in range(num_shards):
        with ShardWriter(path, shard, commit_every=commit_every) as w:
            for image_id in image_ids[shard::num_shards]:
                boxes, emb, size = image_regions(image_id)
                w.add(image_id, boxes, emb, size)
    return finalize_region_store(path)


def test_round_trip(tmp_path):
    ids = [5, 3, 100, 7, 42, 0, 9, 11]  # image 0 etc. may have no regions
    _write_store(str(tmp_path), ids, num_shards=3)
    store = RegionStore(str(tmp_path))
    assert len(store) == len(ids) and sorted(store.image_ids().tolist()) == sorted(ids)
    assert store.embed_dim == DIM and store.teacher == "test" and store.crop_scales == [1.0, 1.5]
    total = 0
    for image_id in ids:
        boxes, emb, size = image_regions(image_id)
        got = store.get(image_id)
        assert got.boxes.dtype == np.float32 and got.embeddings.dtype == np.float16
        np.testing.assert_array_equal(got.boxes, boxes.astype(np.float32))
        np.testing.assert_array_equal(got.embeddings, emb.astype(np.float16))
        assert (got.height, got.width) == size
        total += len(boxes)
    assert store.num_regions == total
    assert store.verify(progress=False)["num_regions"] == total


def test_bytes_on_disk_close_to_raw_arrays(tmp_path):
    create_region_store(str(tmp_path), teacher="t", embed_dim=512)
    rng = np.random.default_rng(0)
    with ShardWriter(str(tmp_path), 0) as w:
        for image_id in range(20):
            xy = rng.uniform(0, 100, (300, 2))
            w.add(
                image_id, np.concatenate([xy, xy + 10], 1), rng.normal(size=(300, 512)), (480, 640)
            )
    finalize_region_store(str(tmp_path))
    s = RegionStore(str(tmp_path)).summary()
    assert s["bytes_raw_arrays"] == 20 * 300 * (512 * 2 + 16)
    assert s["bytes_raw_arrays"] <= s["bytes_on_disk"] <= 1.01 * s["bytes_raw_arrays"]


def test_pickled_store_reads_in_another_process(tmp_path):
    import pickle

    _write_store(str(tmp_path), [1, 2, 3])
    store = RegionStore(str(tmp_path))
    store.get(2)  # opens memory maps, which must not travel
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.get(2).embeddings, store.get(2).embeddings)


def _run_job(store, *args):
    return subprocess.run(
        [sys.executable, JOB, store, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _shard_entries(store):
    with open(os.path.join(store, "manifest.json")) as f:
        return json.load(f)["shards"]


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("reference"))
    proc = _run_job(path, "--finalize")
    assert proc.returncode == 0, proc.stderr
    return path


# (the shard header, written before the first region, takes one atomic write: 2 fsyncs, 1 replace)
@pytest.mark.parametrize("kill_at", ["index:3", "fsync:9", "replace:5", "seal:3"])
def test_killed_writer_resumes_to_the_same_store(tmp_path, reference_store, kill_at):
    path = str(tmp_path / "store")
    killed = _run_job(path, "--kill-at", kill_at, "--finalize")
    assert killed.returncode == -9, killed.stderr  # SIGKILL
    with pytest.raises(RegionStoreError, match="not finalised"):
        RegionStore(path)
    resumed = _run_job(path, "--finalize")
    assert resumed.returncode == 0, resumed.stderr
    written_again = {int(l.split()[1]) for l in resumed.stdout.split("\n") if l.startswith("added")}
    written_before = {int(l.split()[1]) for l in killed.stdout.split("\n") if l.startswith("added")}
    assert len(written_again) < 40  # resumed, not restarted
    assert written_before | written_again == set(range(40))
    assert _shard_entries(path) == _shard_entries(reference_store)  # sha256 of every file
    assert not [f for f in os.listdir(path) if f.endswith(".tmp")]


def test_writers_killed_at_random_times_then_resumed(tmp_path, reference_store):
    """Two shards written in parallel processes, each killed at a random moment, then resumed."""
    import time

    path = str(tmp_path / "store")
    rnd = random.Random(0)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                JOB,
                path,
                "--shards",
                "2",
                "--shard",
                str(s),
                "--images",
                "40",
                "--commit-every",
                "2",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (0, 1)
    ]
    for proc in procs:
        for line in proc.stdout:  # wait until it writes, then kill it a little later
            if line.startswith("added"):
                break
        time.sleep(rnd.uniform(0.0, 0.05))
        proc.kill()
        proc.communicate()
    for s in (0, 1):
        done = _run_job(path, "--shards", "2", "--shard", str(s), "--commit-every", "2")
        assert done.returncode == 0, done.stderr
    finalize_region_store(path)
    store, ref = RegionStore(path), RegionStore(reference_store)
    assert sorted(store.image_ids().tolist()) == sorted(ref.image_ids().tolist())
    for image_id in ref.image_ids().tolist():
        np.testing.assert_array_equal(store.get(image_id).embeddings, ref.get(image_id).embeddings)
        np.testing.assert_array_equal(store.get(image_id).boxes, ref.get(image_id).boxes)


# ---- errors ------------------------------------------------------------------------------


def test_missing_image_id_names_store_and_id(tmp_path):
    _write_store(str(tmp_path), [1, 2])
    with pytest.raises(RegionStoreError, match=rf"{tmp_path} has no regions for image id 77"):
        RegionStore(str(tmp_path)).get(77)


def test_other_teacher_dimension_is_refused(tmp_path):
    create_region_store(str(tmp_path), teacher="a", embed_dim=16)
    with pytest.raises(RegionStoreError, match="embed_dim = 16, but this run has embed_dim = 32"):
        create_region_store(str(tmp_path), teacher="a", embed_dim=32)
    with ShardWriter(str(tmp_path), 0) as w:
        with pytest.raises(
            RegionStoreError,
            match=r"image id 3: embeddings have shape \(2, 8\), expected \[2, 16\]",
        ):
            w.add(3, np.zeros((2, 4)), np.zeros((2, 8)), (10, 10))


def test_truncated_shard_names_the_shard(tmp_path):
    _write_store(str(tmp_path), list(range(10)), num_shards=2)
    emb = tmp_path / "shard-00001-of-00002.embeddings.f16"
    with open(emb, "r+b") as f:
        f.truncate(os.path.getsize(emb) - 2)
    with pytest.raises(
        RegionStoreError,
        match="shard shard-00001-of-00002: .*embeddings.f16 has .* bytes but the manifest records",
    ):
        RegionStore(str(tmp_path))
    # a writer that resumes this shard refuses too (the index commits more than the file holds)
    with pytest.raises(RegionStoreError, match="shard-00001-of-00002: .* the file was truncated"):
        ShardWriter(str(tmp_path), 1)


def test_corrupted_shard_fails_its_checksum(tmp_path):
    _write_store(str(tmp_path), list(range(10)), num_shards=2)
    emb = tmp_path / "shard-00000-of-00002.embeddings.f16"
    data = bytearray(emb.read_bytes())
    data[10] ^= 0xFF
    emb.write_bytes(bytes(data))
    store = RegionStore(str(tmp_path))  # same size: opening does not read the data
    with pytest.raises(
        RegionStoreError, match="shard shard-00000-of-00002: .*embeddings.f16 fails its sha256"
    ):
        store.verify(progress=False)


def test_nan_embeddings_are_refused_with_image_id(tmp_path):
    create_region_store(str(tmp_path), teacher="t", embed_dim=4)
    emb = np.ones((2, 4))
    emb[1, 2] = np.nan
    with ShardWriter(str(tmp_path), 0) as w:
        with pytest.raises(
            RegionStoreError, match="shard-00000-of-00001, image id 12: embeddings hold NaN"
        ):
            w.add(12, np.zeros((2, 4)), emb, (10, 10))


def test_inverted_boxes_are_refused(tmp_path):
    create_region_store(str(tmp_path), teacher="t", embed_dim=4)
    with ShardWriter(str(tmp_path), 0) as w:
        with pytest.raises(RegionStoreError, match=r"image id 4: boxes \[1\] have x2 < x1"):
            w.add(4, np.array([[0, 0, 5, 5], [9, 0, 3, 5]]), np.ones((2, 4)), (10, 10))


def test_duplicate_image_ids(tmp_path):
    create_region_store(str(tmp_path), teacher="t", embed_dim=4, num_shards=2)
    with ShardWriter(str(tmp_path), 0) as w:
        w.add(5, np.zeros((1, 4)), np.ones((1, 4)), (10, 10))
        with pytest.raises(RegionStoreError, match="image id 5: this image id was already written"):
            w.add(5, np.zeros((1, 4)), np.ones((1, 4)), (10, 10))
    with ShardWriter(str(tmp_path), 1) as w:
        w.add(5, np.zeros((1, 4)), np.ones((1, 4)), (10, 10))
    with pytest.raises(
        RegionStoreError,
        match="image id 5 is in shard shard-00000-of-00002 and in shard shard-00001-of-00002",
    ):
        finalize_region_store(str(tmp_path))


def test_other_format_version_is_refused(tmp_path):
    _write_store(str(tmp_path), [1])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        RegionStoreError,
        match=(
            f"{tmp_path}: format version {FORMAT_VERSION + 1}, but this vild_d2 reads versions"
            f" up to {FORMAT_VERSION}"
        ),
    ):
        RegionStore(str(tmp_path))


def test_a_version_1_store_reads_without_shard_headers_a_version_2_store_does_not(tmp_path):
    _write_store(str(tmp_path), [1, 2])
    os.remove(shard_files(str(tmp_path), "shard-00000-of-00001")["header"])
    with pytest.raises(RegionStoreError, match="shard-00000-of-00001.header.json is missing"):
        RegionStore(str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert sorted(RegionStore(str(tmp_path)).image_ids().tolist()) == [1, 2]


def test_cli_inspect_and_verify(tmp_path):
    _write_store(str(tmp_path), list(range(6)))
    tool = os.path.join(ROOT, "tools", "region_store.py")
    out = subprocess.run(
        [sys.executable, tool, "verify", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0 and "OK" in out.stdout and "num_images" in out.stdout, out.stderr
    out = subprocess.run(
        [sys.executable, tool, "inspect", str(tmp_path), "--image-id", "99"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "no regions for image id 99" in out.stderr
