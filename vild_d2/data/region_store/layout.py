"""
On-disk layout of a region-embedding store (format version 2; version 1, whose shards may
lack their header.json, is read but not resumed).

A store is a folder::

    manifest.json                         store header + one entry per finalised shard
    shard-00000-of-00004.embeddings.f16   [R, D] float16, little-endian, C order
    shard-00000-of-00004.boxes.f32        [R, 4] float32, XYXY in ORIGINAL image pixels
    shard-00000-of-00004.index.npy        [N] INDEX_DTYPE, one row per image
    shard-00000-of-00004.header.json      what made the shard's regions (teacher and proposals,
                                          with content hashes; written before its first region)
    shard-00000-of-00004.seal.json        the shard's entry, written when its writer closes

R is the number of regions and N the number of images in the shard. An image's regions
are rows ``start : start + count`` of both data files, in the order they were written
(the precompute writes them by descending proposal score). The data files are raw
arrays, so bytes on disk = regions x (2 D + 16) plus the index (32 bytes per image).

Writers append to the data files and then atomically replace the index: the index is
the commit record, and bytes past its end are discarded when a writer resumes.
"""

import hashlib
import json
import os
import zlib
from typing import Dict, Optional, Sequence

import numpy as np

from ...errors import VildD2Error

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "INDEX_DTYPE",
    "EMBEDDING_DTYPE",
    "BOX_DTYPE",
    "RegionStoreError",
    "shard_name",
    "shard_files",
    "read_manifest",
    "region_crc32",
    "file_digest",
    "read_index",
    "store_provenance",
    "provenance_mismatch",
    "settings_mismatch",
    "check_unique_image_ids",
]

FORMAT_NAME = "vild_d2.region_store"
FORMAT_VERSION = 2  # 2: every shard has its header.json
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
EMBEDDING_DTYPE = np.dtype("<f2")
BOX_DTYPE = np.dtype("<f4")
INDEX_DTYPE = np.dtype(
    [
        ("image_id", "<i8"),  # dataset image id
        ("start", "<i8"),  # first region row in the data files
        ("count", "<i4"),  # number of regions
        ("height", "<i4"),  # original image height, pixels
        ("width", "<i4"),  # original image width, pixels
        ("crc32", "<u4"),  # zlib.crc32 of the image's box bytes then embedding bytes
    ]
)
# Header fields that must agree when a writer re-opens an existing store.
HEADER_KEYS = ("format", "format_version", "teacher", "embed_dim", "crop_scales", "num_shards")


class RegionStoreError(VildD2Error, ValueError):
    """A region store that cannot be used; the message names the store, shard or image id."""


def shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}"


def shard_files(store_dir: str, name: str) -> Dict[str, str]:
    """Paths of a shard's files: ``embeddings``, ``boxes``, ``index``, ``header``, ``seal``."""
    base = os.path.join(store_dir, name)
    return {
        "embeddings": base + ".embeddings.f16",
        "boxes": base + ".boxes.f32",
        "index": base + ".index.npy",
        "header": base + ".header.json",
        "seal": base + ".seal.json",
    }


def store_provenance(manifest: dict) -> dict:
    """What every shard's header must hold for a store with this manifest."""
    return {
        "teacher": manifest["teacher"],
        "embed_dim": manifest["embed_dim"],
        "crop_scales": manifest["crop_scales"],
        **manifest.get("extra", {}),
    }


def _first_difference(a: dict, b: dict) -> Optional[str]:
    """The first key (in sorted order) whose value differs between ``a`` and ``b``, or None."""
    return next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), None)


def provenance_mismatch(found: dict, wanted: dict) -> str:
    """'' if equal, else "KEY = found, but ... KEY = wanted" for the first differing key."""
    key = _first_difference(found, wanted)
    if key is None:
        return ""
    return f"{key} = {found.get(key)!r}, but the store's settings have {key} = {wanted.get(key)!r}"


def settings_mismatch(store_dir: str, recorded: dict, settings: dict) -> str:
    """
    '' if a store that recorded the run settings ``recorded`` (its manifest's "extra") may be
    resumed by a run with ``settings``, else why not. A content hash ("*_sha256") the store
    did not record cannot be checked, so such a store is refused as well.
    """
    k = _first_difference(recorded, settings)
    if k is None:
        return ""
    if k.endswith("_sha256") and k not in recorded:
        return (
            f"region store {store_dir} was made before vild_d2 recorded content hashes (no {k}):"
            " what made it cannot be checked; recompute it in a new folder"
        )
    return (
        f"region store {store_dir} was made with {k} = {recorded.get(k)!r}, but this run has"
        f" {k} = {settings.get(k)!r}: use a new folder, or the same settings to resume it"
    )


def check_unique_image_ids(store_dir: str, ids_by_shard: Dict[str, Sequence[int]]) -> None:
    """Raise RegionStoreError naming the first image id that two shards (or one, twice) hold."""
    owner: Dict[int, str] = {}
    for name, ids in ids_by_shard.items():
        for image_id in ids:
            if image_id in owner:
                raise RegionStoreError(
                    f"region store {store_dir}: image id {image_id} is in shard {owner[image_id]}"
                    f" and in shard {name} (duplicate image id)"
                )
            owner[image_id] = name


def read_manifest(store_dir: str) -> dict:
    """The store's manifest, checked for format and version; RegionStoreError otherwise."""
    path = os.path.join(store_dir, MANIFEST)
    if not os.path.isfile(path):
        raise RegionStoreError(f"region store {store_dir}: no {MANIFEST} (not a region store?)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise RegionStoreError(f"region store {store_dir}: {MANIFEST} is not valid json ({e})")
    if manifest.get("format") != FORMAT_NAME:
        raise RegionStoreError(
            f"region store {store_dir}: {MANIFEST} has format {manifest.get('format')!r}, "
            f"expected {FORMAT_NAME!r}"
        )
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise RegionStoreError(
            f"region store {store_dir}: format version {manifest.get('format_version')}, but "
            f"this vild_d2 reads versions up to {FORMAT_VERSION}; recompute the store with this "
            "version's tools/precompute_region_embeddings.py"
        )
    return manifest


def read_index(path: str, where: str) -> np.ndarray:
    """A shard's index array; RegionStoreError naming ``where`` if unreadable."""
    try:
        index = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RegionStoreError(f"{where}: index {path} cannot be read ({e})")
    if index.dtype != INDEX_DTYPE or index.ndim != 1:
        raise RegionStoreError(
            f"{where}: index {path} has dtype {index.dtype}, expected {INDEX_DTYPE}"
        )
    return index


def region_crc32(boxes: np.ndarray, embeddings: np.ndarray) -> int:
    """Checksum of one image's regions as stored (boxes bytes, then embedding bytes)."""
    return zlib.crc32(
        np.ascontiguousarray(embeddings).data, zlib.crc32(np.ascontiguousarray(boxes).data)
    )


def file_digest(path: str, chunk_bytes: int = 1 << 24) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
