"""
A region-store writer job for the kill tests: writes deterministic regions for images
0..N-1 of its shard (image_id % num_shards == shard), resuming what is committed, then
closes the shard and, with --finalize, the store.

--kill-at WHAT:K makes this process SIGKILL itself at the K-th call of WHAT, to stop a
writer at chosen points of a commit:
    index   before the index is replaced (data appended, not committed)
    fsync   at an fsync of the data (the tail may be partly flushed)
    replace between writing the new index's temporary file and renaming it
    seal    before the shard's seal is written (all data committed)
"""

import argparse
import os
import signal

import numpy as np

import vild_d2.data.region_store.writer as writer_module
import vild_d2.utils.atomic_io as atomic_io
from vild_d2.data.region_store import ShardWriter, create_region_store, finalize_region_store

DIM = 16


def image_regions(image_id: int):
    rng = np.random.default_rng(1000 + image_id)
    n = int(rng.integers(0, 7))
    xy = rng.uniform(0, 80, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 40, (n, 2))], axis=1)
    emb = rng.normal(size=(n, DIM))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return boxes, emb, (120, 160)


def _kill_on_call(fn, k):
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)

    return wrapped


def main():
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--commit-every", type=int, default=4)
    p.add_argument("--finalize", action="store_true")
    p.add_argument("--kill-at", default="")
    args = p.parse_args()
    if args.kill_at:
        what, k = args.kill_at.split(":")
        k = int(k)
        if what == "index":
            writer_module.atomic_save_npy = _kill_on_call(writer_module.atomic_save_npy, k)
        elif what == "fsync":
            writer_module.os.fsync = _kill_on_call(os.fsync, k)
        elif what == "replace":
            atomic_io.os.replace = _kill_on_call(os.replace, k)
        elif what == "seal":
            writer_module.atomic_write_json = _kill_on_call(writer_module.atomic_write_json, k)
        else:
            raise SystemExit(f"unknown kill point {what}")
    create_region_store(args.store, teacher="job", embed_dim=DIM, num_shards=args.shards)
    with ShardWriter(args.store, args.shard, commit_every=args.commit_every) as shard:
        for image_id in range(args.shard, args.images, args.shards):
            if image_id in shard:
                continue
            boxes, emb, size = image_regions(image_id)
            shard.add(image_id, boxes, emb, size)
            print(f"added {image_id}", flush=True)
    if args.finalize:
        finalize_region_store(args.store)


if __name__ == "__main__":
    main()
