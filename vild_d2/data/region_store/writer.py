"""
Writing a region store: create (or re-open) the store, one ``ShardWriter`` per worker,
then ``finalize_region_store`` once every shard is closed.

    create_region_store(path, teacher="ViT-B/32", embed_dim=512, num_shards=world_size)
    with ShardWriter(path, rank) as shard:          # resumes what a killed run committed
        for d in my_part_of_the_dataset:
            if d["image_id"] in shard:
                continue
            shard.add(d["image_id"], boxes, embeddings, (d["height"], d["width"]))
    # after all workers are done (e.g. comm.synchronize()), in one process:
    finalize_region_store(path)

Every ``commit_every`` images the writer appends the data, fsyncs it, then atomically
replaces the shard's index (the commit record). A writer killed at any point loses at
most the images since its last commit; the next writer truncates the uncommitted tail.
"""

import glob
import json
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ...utils.atomic_io import atomic_save_npy, atomic_write_json
from .layout import (
    BOX_DTYPE,
    EMBEDDING_DTYPE,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_KEYS,
    INDEX_DTYPE,
    MANIFEST,
    RegionStoreError,
    check_unique_image_ids,
    file_digest,
    provenance_mismatch,
    read_index,
    read_manifest,
    region_crc32,
    shard_files,
    shard_name,
    store_provenance,
)

__all__ = ["create_region_store", "ShardWriter", "finalize_region_store"]

logger = logging.getLogger(__name__)


def create_region_store(
    store_dir: str,
    *,
    teacher: str,
    embed_dim: int,
    crop_scales: Sequence[float] = (1.0, 1.5),
    num_shards: int = 1,
    extra: Optional[dict] = None,
) -> dict:
    """
    Create the store folder and its manifest, or check that an existing store was made
    with the same teacher, D, crop scales and shard count (RegionStoreError naming the
    field otherwise). Safe to call from every worker at once.

    Args:
        teacher: name or checkpoint of the CLIP teacher the embeddings come from.
        embed_dim: D, the embedding dimension.
        crop_scales: box enlargement factors whose crop embeddings were summed.
        num_shards: number of shards (= writer processes).
        extra: free-form json-able provenance (proposal source, M, ...).

    Returns:
        the manifest dict.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "teacher": str(teacher),
        "embed_dim": int(embed_dim),
        "crop_scales": [float(s) for s in crop_scales],
        "num_shards": int(num_shards),
        "embedding_dtype": "float16",
        "box_dtype": "float32",
        "box_mode": "XYXY_ABS in original image pixels",
        "extra": dict(extra or {}),
        "shards": {},
    }
    path = os.path.join(store_dir, MANIFEST)
    if os.path.exists(path):
        existing = read_manifest(store_dir)
        for key in HEADER_KEYS:
            if existing.get(key) != header[key]:
                raise RegionStoreError(
                    f"region store {store_dir} was made with {key} = {existing.get(key)!r}, "
                    f"but this run has {key} = {header[key]!r}: use a new folder, or the "
                    "same teacher and settings to resume it"
                )
        return existing
    os.makedirs(store_dir, exist_ok=True)
    atomic_write_json(path, header)
    return header


class ShardWriter:
    """
    Appends images' regions to one shard of a store; resumes a shard left by a killed
    writer. Use as a context manager (or call :meth:`close`), which commits and seals.
    """

    def __init__(self, store_dir: str, shard_index: int, *, commit_every: int = 32):
        """
        The shard's header must equal the manifest's teacher, D, crop scales and ``extra``
        (which the region tool fills with the teacher's and the proposals' content
        hashes): a shard made by another run is refused, manifest or not. A new shard gets
        its header before its first region.
        """
        self.store_dir = store_dir
        manifest = read_manifest(store_dir)
        num_shards = manifest["num_shards"]
        if not 0 <= shard_index < num_shards:
            raise RegionStoreError(
                f"region store {store_dir} has {num_shards} shards; shard index {shard_index} "
                "is outside [0, num_shards)"
            )
        self.embed_dim = int(manifest["embed_dim"])
        self.name = shard_name(shard_index, num_shards)
        self.files = shard_files(store_dir, self.name)
        self.where = f"region store {store_dir}, shard {self.name}"
        self.commit_every = max(1, int(commit_every))
        if os.path.exists(self.files["index"]):
            self._index = read_index(self.files["index"], self.where)
        else:
            self._index = np.zeros(0, dtype=INDEX_DTYPE)
        self._ids = set(self._index["image_id"].tolist())
        if len(self._ids) != len(self._index):
            raise RegionStoreError(f"{self.where}: its index lists an image id twice")
        self._num_regions = int(self._index["count"].sum())
        self._check_header(store_provenance(manifest))
        self._drop_uncommitted_tail()
        for stale in glob.glob(os.path.join(store_dir, f".{self.name}.*.tmp")):
            os.remove(stale)  # temporary file of a write that was killed before its rename
        if os.path.exists(self.files["seal"]):
            os.remove(self.files["seal"])  # open again: finalize needs a new seal
        self._pending = []
        self._pending_ids = set()

    def _check_header(self, provenance: dict) -> None:
        path = self.files["header"]
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                found = json.load(f)
            mismatch = provenance_mismatch(found, provenance)
            if mismatch:
                raise RegionStoreError(
                    f"{self.where} was written with {mismatch}: its regions come from another"
                    " teacher or other proposals; use a new folder (or the same teacher, proposals"
                    " and settings to resume)"
                )
        elif len(self._index):
            raise RegionStoreError(
                f"{self.where} holds regions but no {os.path.basename(path)}: what made them is"
                " unknown (a store of an older version, or the header was deleted); use a new"
                " folder"
            )
        else:
            atomic_write_json(path, provenance)

    def _drop_uncommitted_tail(self) -> None:
        widths = {
            "embeddings": self.embed_dim * EMBEDDING_DTYPE.itemsize,
            "boxes": 4 * BOX_DTYPE.itemsize,
        }
        for key, width in widths.items():
            path, committed = self.files[key], self._num_regions * width
            size = os.path.getsize(path) if os.path.exists(path) else 0
            if size < committed:
                raise RegionStoreError(
                    f"{self.where}: {path} has {size} bytes but the index commits "
                    f"{self._num_regions} regions ({committed} bytes): the file was truncated "
                    "or replaced; delete this shard's files to recompute it"
                )
            with open(path, "ab") as f:
                if size > committed:
                    logger.info(
                        f"{self.where}: dropping {size - committed} uncommitted bytes of {path}"
                    )
                    f.truncate(committed)

    @property
    def num_images(self) -> int:
        """Images written (committed or pending)."""
        return len(self._ids) + len(self._pending_ids)

    def __contains__(self, image_id) -> bool:
        image_id = int(image_id)
        return image_id in self._ids or image_id in self._pending_ids

    def add(self, image_id: int, boxes, embeddings, image_size: Tuple[int, int]) -> None:
        """
        Args:
            image_id: the dataset's image id; each id at most once per store.
            boxes: [n, 4] XYXY in original image pixels (stored as float32).
            embeddings: [n, D] teacher embeddings, unit norm (stored as float16).
            image_size: (height, width) of the original image, pixels.
        """
        image_id = int(image_id)
        where = f"{self.where}, image id {image_id}"
        if image_id in self:
            raise RegionStoreError(
                f"{where}: this image id was already written (duplicate image id)"
            )
        boxes = np.asarray(boxes, dtype=np.float64)
        embeddings = np.asarray(embeddings)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise RegionStoreError(f"{where}: boxes have shape {boxes.shape}, expected [n, 4]")
        if embeddings.shape != (len(boxes), self.embed_dim):
            raise RegionStoreError(
                f"{where}: embeddings have shape {embeddings.shape}, expected "
                f"[{len(boxes)}, {self.embed_dim}] ({len(boxes)} boxes, store D = {self.embed_dim})"
            )
        emb16 = np.ascontiguousarray(embeddings, dtype=EMBEDDING_DTYPE)
        if not np.isfinite(emb16).all():
            raise RegionStoreError(f"{where}: embeddings hold NaN or Inf")
        if not np.isfinite(boxes).all():
            raise RegionStoreError(f"{where}: boxes hold NaN or Inf")
        inverted = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        if len(inverted):
            raise RegionStoreError(
                f"{where}: boxes {inverted[:5].tolist()} have x2 < x1 or y2 < y1 (XYXY expected)"
            )
        height, width = (int(v) for v in image_size)
        if height <= 0 or width <= 0:
            raise RegionStoreError(f"{where}: image size {image_size} is not positive")
        box32 = np.ascontiguousarray(boxes, dtype=BOX_DTYPE)
        self._pending.append((image_id, box32, emb16, height, width))
        self._pending_ids.add(image_id)
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        """Make the pending images durable: append + fsync the data, then swap the index."""
        if not self._pending:
            return
        rows = []
        start = self._num_regions
        with (
            open(self.files["embeddings"], "ab") as f_emb,
            open(self.files["boxes"], "ab") as f_box,
        ):
            for image_id, boxes, emb, height, width in self._pending:
                f_emb.write(emb.tobytes())
                f_box.write(boxes.tobytes())
                rows.append((image_id, start, len(boxes), height, width, region_crc32(boxes, emb)))
                start += len(boxes)
            for f in (f_emb, f_box):
                f.flush()
                os.fsync(f.fileno())
        index = np.concatenate([self._index, np.array(rows, dtype=INDEX_DTYPE)])
        atomic_save_npy(self.files["index"], index)  # the commit point
        self._index, self._num_regions = index, start
        self._ids |= self._pending_ids
        self._pending, self._pending_ids = [], set()

    def close(self) -> dict:
        """Commit, checksum the shard's files and write its seal; returns the seal entry."""
        self.commit()
        if not os.path.exists(self.files["index"]):  # a shard without images
            atomic_save_npy(self.files["index"], self._index)
        entry = {
            "name": self.name,
            "num_images": len(self._index),
            "num_regions": self._num_regions,
            "files": {
                key: {
                    "file": os.path.basename(self.files[key]),
                    "bytes": os.path.getsize(self.files[key]),
                    "sha256": file_digest(self.files[key]),
                }
                for key in ("embeddings", "boxes", "index")
            },
        }
        atomic_write_json(self.files["seal"], entry)
        return entry

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.commit()  # keep the finished images; the shard stays open (unsealed)


def finalize_region_store(store_dir: str) -> dict:
    """
    Gather every shard's seal into the manifest (atomically), after checking that all
    shards are closed and no image id is in two shards. Run once, after all writers.

    Returns:
        the complete manifest.
    """
    manifest = read_manifest(store_dir)
    names = [shard_name(i, manifest["num_shards"]) for i in range(manifest["num_shards"])]
    entries: Dict[str, dict] = {}
    open_shards = []
    for name in names:
        seal = shard_files(store_dir, name)["seal"]
        if not os.path.exists(seal):
            open_shards.append(name)
            continue
        with open(seal, encoding="utf-8") as f:
            entries[name] = json.load(f)
    if open_shards:
        raise RegionStoreError(
            f"region store {store_dir}: shards {open_shards} are not closed (their writer is "
            "still running or was killed; re-run it to resume)"
        )
    where = f"region store {store_dir}, shard"
    ids_by_shard = {
        name: read_index(shard_files(store_dir, name)["index"], f"{where} {name}")[
            "image_id"
        ].tolist()
        for name in names
    }
    check_unique_image_ids(store_dir, ids_by_shard)
    manifest["shards"] = entries
    manifest["num_images"] = sum(e["num_images"] for e in entries.values())
    manifest["num_regions"] = sum(e["num_regions"] for e in entries.values())
    atomic_write_json(os.path.join(store_dir, MANIFEST), manifest)
    return manifest
