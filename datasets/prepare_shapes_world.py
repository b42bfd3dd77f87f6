#!/usr/bin/env python
"""
Generate the shapes world (a synthetic LVIS-format dataset) under
$DETECTRON2_DATASETS/shapes_world (default ./datasets/shapes_world), where vild_d2
registers it as ``shapes_world_train`` / ``shapes_world_val``, and its transfer dataset
(another vocabulary, ``shapes_world_transfer``).

    python datasets/prepare_shapes_world.py [--num-train 64 --num-val 16 --seed 0]
"""

import argparse
import os

from vild_d2.data.datasets import shapes_world_root
from vild_d2.world.spec import ShapesWorldSpec
from vild_d2.world.splits import generate_shapes_world, generate_transfer_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--root", default=shapes_world_root(), help="output folder")
    p.add_argument("--num-train", type=int, default=64)
    p.add_argument("--num-val", type=int, default=16)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--num-transfer", type=int, default=16, help="images of the transfer dataset (0: none)"
    )
    p.add_argument(
        "--transfer-only",
        action="store_true",
        help="only (re)write the transfer dataset of the world already under --root",
    )
    args = p.parse_args()
    spec = ShapesWorldSpec(
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
    )
    splits = {} if args.transfer_only else generate_shapes_world(args.root, spec)
    if args.num_transfer > 0:
        splits["transfer"] = generate_transfer_split(args.root, args.num_transfer)
    for split, path in splits.items():
        print(f"{split}: {path}")
    print(f"images under {os.path.abspath(args.root)}")


if __name__ == "__main__":
    main()
