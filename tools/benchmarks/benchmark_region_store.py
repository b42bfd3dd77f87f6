#!/usr/bin/env python
"""
Region-store cost, measured in one run on this machine:
  1. bytes on disk per region vs the raw arrays (fp16 [D] embedding + float32 box);
  2. per-image time of the training mapper of configs/LVIS-OV/vild_R_50_FPN.yaml (LSJ
     1024, masks) with distillation regions from the store vs the same mapper without
     them, on the same images with the same random transforms (paired), and the time of
     the added step alone (store read + box transform);
  3. the store read alone with and without the crc32 check that every read does by default
     (target: the check adds <= 2 ms per image at M = 300, D = 512).

    python tools/benchmarks/benchmark_region_store.py [--images 64 --regions 300 --dim 512]

Images: real COCO JPEGs from ../shared/data/coco128 (or $VILD_D2_SHARED_DATA/coco128) when
present, else generated 640x480 JPEGs. Target: <= 2 ms added per image.
"""

import argparse
import os
import statistics
import tempfile
import time

import detectron2.data.transforms as T
import numpy as np
from benchmark_images import ROOT, benchmark_dataset_dicts

import vild_d2  # noqa: F401

# isort: split
from vild_d2.config import load_config
from vild_d2.data import (
    DistillDatasetMapper,
    RegionStore,
    ShardWriter,
    create_region_store,
    finalize_region_store,
)


def write_store(path, dicts, regions, dim):
    rng = np.random.default_rng(0)
    create_region_store(path, teacher="random", embed_dim=dim)
    with ShardWriter(path, 0) as w:
        for d in dicts:
            xy = rng.uniform(0, [d["width"] * 0.9, d["height"] * 0.9], (regions, 2))
            wh = rng.uniform(8, 200, (regions, 2))
            emb = rng.normal(size=(regions, dim))
            w.add(
                d["image_id"],
                np.concatenate([xy, xy + wh], 1),
                emb / np.linalg.norm(emb, axis=1, keepdims=True),
                (d["height"], d["width"]),
            )
    finalize_region_store(path)
    return RegionStore(path)


def _ms(values, q=None) -> str:
    """Mean (or the ``q`` quantile) of seconds, in ms."""
    values = sorted(values)
    v = statistics.mean(values) if q is None else values[min(len(values) - 1, int(q * len(values)))]
    return f"{1000 * v:.2f}"


def time_mappers(dicts, plain, distill, passes: int):
    """Per image: the mapper without and with the store, and the added step alone (seconds)."""
    t_plain, t_distill, t_added = [], [], []
    for p in range(passes):
        for i, d in enumerate(dicts):
            seed = p * 100000 + i
            for mapper, times in ((plain, t_plain), (distill, t_distill)):
                np.random.seed(seed)
                t0 = time.perf_counter()
                mapper(d)
                times.append(time.perf_counter() - t0)
            # the added step alone, with the transforms of this image
            np.random.seed(seed)
            aug = T.AugInput(np.zeros((d["height"], d["width"], 3), np.uint8))
            transforms = distill.augmentations(aug)
            t0 = time.perf_counter()
            distill.distill_regions(d, transforms, aug.image.shape[:2])
            t_added.append(time.perf_counter() - t0)
        if p == 0:  # first pass warms the page cache and the allocator
            t_plain.clear(), t_distill.clear(), t_added.clear()
    return t_plain, t_distill, t_added


def time_reads(store, dicts, passes: int):
    """The store read alone, without and with its crc32 check (both copy the arrays out)."""
    t_read, t_checked = [], []
    for p in range(passes):
        for d in dicts:
            for check, times in ((False, t_read), (True, t_checked)):
                t0 = time.perf_counter()
                r = store.get(d["image_id"], check=check)
                np.array(r.boxes), np.array(r.embeddings)
                times.append(time.perf_counter() - t0)
        if p == 0:
            t_read.clear(), t_checked.clear()
    return t_read, t_checked


def _row(name: str, values) -> str:
    return f"| {name:<44} | {_ms(values):>9} | {_ms(values, 0.99):>9} |"


def print_report(args, s, source, t_plain, t_distill, t_added, t_read, t_checked) -> None:
    print(
        f"\nRegion store: {s['num_images']} images x M={args.regions} regions, D={args.dim},"
        f" images: {source}"
    )
    print(f"| {'quantity':<44} | {'value':>12} |")
    print(f"|{'-' * 46}|{'-' * 14}|")
    print(f"| {'bytes on disk per region':<44} | {s['bytes_on_disk'] / s['num_regions']:>12.2f} |")
    raw = s["bytes_raw_arrays"]
    print(f"| {'raw array bytes per region (2D + 16)':<44} | {raw / s['num_regions']:>12.2f} |")
    print(f"| {'on disk / raw':<44} | {s['bytes_on_disk'] / raw:>12.4f} |")
    n = len(t_plain)
    print(f"\nPer-image mapper time, {n} images (passes 2..{args.passes}), LSJ 1024 + masks:")
    print(f"| {'mapper':<44} | {'mean ms':>9} | {'p99 ms':>9} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|")
    print(_row("mapper without a store (no embeddings)", t_plain))
    print(_row("mapper with the store", t_distill))
    print(_row("paired difference", [a - b for a, b in zip(t_distill, t_plain)]))
    print(_row("added step alone (store read + transform)", t_added))
    print(_row("store read alone, no check", t_read))
    print(_row("store read alone + crc32 check (the default)", t_checked))
    ratio = statistics.mean(t_checked) / statistics.mean(t_read)
    print(
        f"\ncrc32 check: +{1000 * (statistics.mean(t_checked) - statistics.mean(t_read)):.3f} ms"
        f" per image ({ratio:.2f}x the read alone)"
    )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--regions", type=int, default=300, help="M per image")
    parser.add_argument("--dim", type=int, default=512, help="D")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dicts, source = benchmark_dataset_dicts(args.images, tmp)
        store = write_store(os.path.join(tmp, "store"), dicts, args.regions, args.dim)
        cfg = load_config(
            os.path.join(ROOT, "configs", "LVIS-OV", "vild_R_50_FPN.yaml"),
            ["MODEL.VILD.EMBED_DIM", str(args.dim), "DATASETS.REGION_STORE_TRAIN", ""],
        )
        plain = DistillDatasetMapper(cfg, is_train=True)  # same mapper, no store
        distill = DistillDatasetMapper(cfg, is_train=True, region_store=store)
        mapped = time_mappers(dicts, plain, distill, args.passes)
        reads = time_reads(store, dicts, args.passes)
        print_report(args, store.summary(), source, *mapped, *reads)


if __name__ == "__main__":
    main()
