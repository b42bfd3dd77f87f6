#!/usr/bin/env python
"""
Inspect, verify or finalise a region-embedding store.

    python tools/region_store.py inspect  STORE [--image-id ID]
    python tools/region_store.py verify   STORE      # checksums + NaN scan, progress bar
    python tools/region_store.py finalize STORE      # after all shard writers have closed

Exit status 0 when the store is usable, 1 with a one-line error naming the store, shard
or image id otherwise.
"""

import argparse
import json
import sys

from vild_d2.data.region_store import RegionStore, RegionStoreError, finalize_region_store


def _print_summary(summary: dict) -> None:
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    regions = summary["num_regions"]
    if regions:
        print(
            f"{'bytes_per_region':<{width}}  {summary['bytes_on_disk'] / regions:.1f} on disk, "
            f"{summary['bytes_raw_arrays'] / regions:.1f} raw "
            f"({summary['bytes_on_disk'] / summary['bytes_raw_arrays']:.4f}x)"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("inspect", "verify", "finalize"))
    parser.add_argument("store", help="folder of the store (holds manifest.json)")
    parser.add_argument("--image-id", type=int, help="inspect: also print this image's regions")
    args = parser.parse_args(argv)
    try:
        if args.command == "finalize":
            manifest = finalize_region_store(args.store)
            print(
                f"finalised {args.store}: {manifest['num_images']} images, "
                f"{manifest['num_regions']} regions in {manifest['num_shards']} shards"
            )
            return 0
        store = RegionStore(args.store)
        if args.command == "verify":
            _print_summary(store.verify(progress=True))
            print("OK: checksums match, no NaN/Inf")
            return 0
        _print_summary(store.summary())
        print("extra", json.dumps(store.manifest.get("extra", {})))
        if args.image_id is not None:
            r = store.get(args.image_id)
            print(f"image {args.image_id}: {len(r.boxes)} regions, image size {r.height}x{r.width}")
            for box, emb in zip(r.boxes[:10], r.embeddings[:10]):
                xyxy = ", ".join(f"{v:.1f}" for v in box.tolist())
                print(f"  box [{xyxy}]  |emb| {float((emb.astype('f4') ** 2).sum() ** 0.5):.3f}")
        return 0
    except (RegionStoreError, FileNotFoundError) as e:
        print(f"region_store.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
