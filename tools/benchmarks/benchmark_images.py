"""Images for the benchmarks: real COCO JPEGs when the shared data folder is present."""

import os

import numpy as np
from PIL import Image

from vild_d2.data.datasets import load_coco_ov_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# ../shared/data next to the checkout, or the folder named by VILD_D2_SHARED_DATA
SHARED = os.environ.get("VILD_D2_SHARED_DATA") or os.path.join(
    os.path.dirname(ROOT), "shared", "data"
)
COCO128 = os.path.join(SHARED, "coco128")


def benchmark_dataset_dicts(num_images: int, workdir: str):
    """(dataset dicts, description): coco128's first images, else generated 640x480 JPEGs."""
    if os.path.isdir(COCO128):
        dicts = load_coco_ov_json(
            os.path.join(COCO128, "annotations", "instances_train2017.json"),
            os.path.join(COCO128, "train2017"),
            keep_novel=True,
        )
        return dicts[:num_images], "coco128 (real COCO JPEGs)"
    rng = np.random.default_rng(0)
    dicts = []
    for i in range(num_images):
        path = os.path.join(workdir, f"{i:06d}.jpg")
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path, quality=90)
        dicts.append(
            {"file_name": path, "image_id": i + 1, "height": 480, "width": 640, "annotations": []}
        )
    return dicts, "generated 640x480 JPEGs"
