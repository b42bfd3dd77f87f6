#!/usr/bin/env python
"""
Generate the shapes world (a synthetic LVIS-format dataset) under
$DETECTRON2_DATASETS/shapes_world (default ./datasets/shapes_world), where vild_d2
registers it as ``shapes_world_train`` / ``shapes_world_val``.

    python datasets/prepare_shapes_world.py [--num-train 64 --num-val 16 --seed 0]
"""

import argparse
import os

from vild_d2.data.datasets import ShapesWorldSpec, generate_shapes_world, shapes_world_root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--root", default=shapes_world_root(), help="output folder")
    p.add_argument("--num-train", type=int, default=64)
    p.add_argument("--num-val", type=int, default=16)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    spec = ShapesWorldSpec(
        seed=args.seed, num_train=args.num_train, num_val=args.num_val,
        image_size=args.image_size,
    )
    for split, path in generate_shapes_world(args.root, spec).items():
        print(f"{split}: {path}")
    print(f"images under {os.path.abspath(args.root)}")


if __name__ == "__main__":
    main()
