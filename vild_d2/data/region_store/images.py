"""
What identifies the images a region store was computed for: per image id, the image
file's name and size in bytes (``images.json`` in the store). A dataset regenerated under
the same name, ids and image sizes has other files: its regions would be another image's.
"""

import json
import os
from typing import Dict, List, Sequence

from ...utils.atomic_io import atomic_write_json
from .layout import RegionStoreError

__all__ = ["IMAGES_FILE", "image_fingerprints", "record_images", "check_images_match"]

IMAGES_FILE = "images.json"  # {"images": {image_id: [file name, bytes]}}
SHOWN = 3  # mismatching images named in a message


def image_fingerprints(dataset_dicts: Sequence[dict]) -> Dict[str, List]:
    """{str(image_id): [file's base name, size in bytes]} (a missing file: size -1)."""
    out = {}
    for d in dataset_dicts:
        path = d["file_name"]
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        out[str(d["image_id"])] = [os.path.basename(path), size]
    return out


def _recorded(store_dir: str) -> Dict[str, List]:
    path = os.path.join(store_dir, IMAGES_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["images"]
    except (OSError, ValueError, KeyError) as e:
        raise RegionStoreError(f"{path}: not a readable images record ({e})") from None


def _mismatches(recorded: Dict[str, List], current: Dict[str, List]) -> List[str]:
    return [i for i, fp in current.items() if i in recorded and list(recorded[i]) != list(fp)]


def _describe(store_dir: str, wrong: List[str], recorded, current, what: str) -> str:
    shown = "; ".join(
        f"image {i} was {recorded[i][0]} of {recorded[i][1]} bytes, {what} has"
        f" {current[i][0]} of {current[i][1]} bytes"
        for i in wrong[:SHOWN]
    )
    more = f" (and {len(wrong) - SHOWN} more)" if len(wrong) > SHOWN else ""
    return (
        f"region store {store_dir} was computed for other images: {shown}{more}; its regions"
        " would be other pictures' (recompute the store for these images in a new folder)"
    )


def record_images(store_dir: str, dataset_dicts: Sequence[dict]) -> None:
    """Record the images of a run that fills ``store_dir``; refuse other images of its ids."""
    recorded, current = _recorded(store_dir), image_fingerprints(dataset_dicts)
    wrong = _mismatches(recorded, current)
    if wrong:
        raise RegionStoreError(_describe(store_dir, wrong, recorded, current, "this run"))
    atomic_write_json(os.path.join(store_dir, IMAGES_FILE), {"images": {**recorded, **current}})


def check_images_match(store_dir: str, dataset_dicts: Sequence[dict], what: str) -> None:
    """RegionStoreError if an image of ``dataset_dicts`` is not the file the store was made of."""
    recorded = _recorded(store_dir)
    if not recorded:  # a store made before images were recorded: nothing to compare
        return
    current = image_fingerprints(dataset_dicts)
    wrong = _mismatches(recorded, current)
    if wrong:
        raise RegionStoreError(_describe(store_dir, wrong, recorded, current, what))
