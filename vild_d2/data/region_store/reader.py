"""
Reading a finalised region store: validated on open, memory-mapped, O(1) by image id.
"""

import json
import os
from typing import Dict, List, NamedTuple

import numpy as np
from tqdm import tqdm

from .layout import (
    BOX_DTYPE,
    EMBEDDING_DTYPE,
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

__all__ = ["RegionStore", "ImageRegions"]


class ImageRegions(NamedTuple):
    """One image's regions, as stored (read-only views of the memory-mapped files)."""

    boxes: np.ndarray  # [n, 4] float32, XYXY in original image pixels
    embeddings: np.ndarray  # [n, D] float16, the teacher's unit-norm embeddings
    height: int  # original image height the boxes refer to, pixels
    width: int  # original image width, pixels


class RegionStore:
    """
    A finalised store (see :mod:`vild_d2.data.region_store.layout`). Opening checks the
    manifest's format version, that every shard is finalised, that each file has the
    size the manifest records (catches truncation) and that no image id repeats;
    :meth:`verify` additionally checks checksums and scans for NaN.

    Memory maps are opened lazily in each process, so the object can be handed to
    forked or spawned data-loader workers.
    """

    def __init__(self, store_dir: str):
        self.store_dir = store_dir
        self.manifest = read_manifest(store_dir)
        self.embed_dim = int(self.manifest["embed_dim"])
        num_shards = self.manifest["num_shards"]
        self.shard_names = [shard_name(i, num_shards) for i in range(num_shards)]
        missing = [n for n in self.shard_names if n not in self.manifest.get("shards", {})]
        if missing:
            raise RegionStoreError(
                f"region store {store_dir} is not finalised: shards {missing[:5]} are not in its "
                "manifest (finish the precompute, then: python tools/region_store.py finalize "
                f"{store_dir})"
            )
        indices = [self._open_shard(n) for n in self.shard_names]
        counts = [len(ix) for ix in indices]
        self._index = np.concatenate(indices)
        self._shard_of_row = np.repeat(np.arange(len(indices)), counts)
        ids = self._index["image_id"].tolist()
        self._row_of_id: Dict[int, int] = dict(zip(ids, range(len(ids))))
        if len(self._row_of_id) != len(ids):
            ids_by_shard = zip(self.shard_names, (ix["image_id"].tolist() for ix in indices))
            check_unique_image_ids(self.store_dir, dict(ids_by_shard))
        self._maps: Dict[int, tuple] = {}
        self._maps_pid = None

    def _open_shard(self, name: str) -> np.ndarray:
        where = f"region store {self.store_dir}, shard {name}"
        entry = self.manifest["shards"][name]
        files = shard_files(self.store_dir, name)
        for key in ("embeddings", "boxes", "index"):
            path, expected = files[key], entry["files"][key]["bytes"]
            if not os.path.exists(path):
                raise RegionStoreError(f"{where}: {path} is missing")
            size = os.path.getsize(path)
            if size != expected:
                raise RegionStoreError(
                    f"{where}: {os.path.basename(path)} has {size} bytes but the manifest records "
                    f"{expected}: it was truncated or changed after the store was finalised"
                )
        if os.path.exists(files["header"]):
            with open(files["header"], encoding="utf-8") as f:
                mismatch = provenance_mismatch(json.load(f), store_provenance(self.manifest))
            if mismatch:
                raise RegionStoreError(
                    f"{where} was written with {mismatch}: its regions come from another teacher or"
                    " other proposals than the manifest says (was the manifest rewritten?);"
                    " recompute the store"
                )
        elif self.manifest["format_version"] >= 2:  # version 1 shards may predate headers
            raise RegionStoreError(f"{where}: {files['header']} is missing")
        index = read_index(files["index"], where)
        regions = int(entry["num_regions"])
        ends = index["start"] + index["count"]
        if (
            len(index) != entry["num_images"]
            or (len(index) and (index["start"][0] != 0 or (index["start"][1:] != ends[:-1]).any()))
            or int(index["count"].sum()) != regions
            or (index["count"] < 0).any()
        ):
            raise RegionStoreError(f"{where}: its index does not match its manifest entry")
        if (
            entry["files"]["embeddings"]["bytes"]
            != regions * self.embed_dim * EMBEDDING_DTYPE.itemsize
        ):
            raise RegionStoreError(
                f"{where}: embeddings file size does not match {regions} regions x D = "
                f"{self.embed_dim} (was it written with another D?)"
            )
        return index

    # ---- metadata ---------------------------------------------------------------------
    @property
    def teacher(self) -> str:
        return self.manifest["teacher"]

    @property
    def crop_scales(self) -> List[float]:
        return list(self.manifest["crop_scales"])

    @property
    def num_regions(self) -> int:
        return int(self._index["count"].sum())

    def image_ids(self) -> np.ndarray:
        """[N] int64, in storage order."""
        return self._index["image_id"].copy()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, image_id) -> bool:
        return int(image_id) in self._row_of_id

    # ---- data -------------------------------------------------------------------------
    def _shard_arrays(self, shard: int):
        if self._maps_pid != os.getpid():  # fresh maps in each (forked) process
            self._maps, self._maps_pid = {}, os.getpid()
        if shard not in self._maps:
            files = shard_files(self.store_dir, self.shard_names[shard])
            regions = self.manifest["shards"][self.shard_names[shard]]["num_regions"]
            if regions == 0:
                emb = np.zeros((0, self.embed_dim), EMBEDDING_DTYPE)
                boxes = np.zeros((0, 4), BOX_DTYPE)
            else:
                emb = np.memmap(
                    files["embeddings"], EMBEDDING_DTYPE, "r", shape=(regions, self.embed_dim)
                )
                boxes = np.memmap(files["boxes"], BOX_DTYPE, "r", shape=(regions, 4))
            self._maps[shard] = (boxes, emb)
        return self._maps[shard]

    def get(self, image_id: int, check: bool = True) -> ImageRegions:
        """
        The regions of ``image_id``; RegionStoreError naming the store if it has none, or
        (``check``) if they fail their crc32 checksum: a corrupted store never trains a
        model silently (the check costs a few microseconds per image; see
        tools/benchmarks/benchmark_region_store.py).
        """
        row = self._row_of_id.get(int(image_id))
        if row is None:
            raise RegionStoreError(
                f"region store {self.store_dir} has no regions for image id {image_id} (it holds "
                f"{len(self)} images; was it computed for this dataset?)"
            )
        rec = self._index[row]
        boxes, emb = self._shard_arrays(int(self._shard_of_row[row]))
        start, stop = int(rec["start"]), int(rec["start"]) + int(rec["count"])
        boxes, emb = boxes[start:stop], emb[start:stop]
        if check and region_crc32(boxes, emb) != int(rec["crc32"]):
            raise RegionStoreError(
                f"region store {self.store_dir}, shard {self.shard_names[self._shard_of_row[row]]},"
                f" image id {image_id}: regions fail their crc32 checksum (the store is corrupted;"
                f" python tools/region_store.py verify {self.store_dir} checks it all)"
            )
        return ImageRegions(boxes, emb, int(rec["height"]), int(rec["width"]))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"], state["_maps_pid"] = {}, None  # memory maps are not pickled
        return state

    # ---- checks -----------------------------------------------------------------------
    def verify(self, progress: bool = True) -> dict:
        """
        Full check: sha256 of every file against the manifest (names the shard and file),
        then each image's checksum and finiteness (names the image id).

        Returns:
            a summary (see :meth:`summary`).
        """
        for name in tqdm(self.shard_names, desc="checksums", unit="shard", disable=not progress):
            entry = self.manifest["shards"][name]
            files = shard_files(self.store_dir, name)
            for key in ("embeddings", "boxes", "index"):
                if file_digest(files[key]) != entry["files"][key]["sha256"]:
                    raise RegionStoreError(
                        f"region store {self.store_dir}, shard {name}:"
                        f" {os.path.basename(files[key])} fails its sha256 checksum (corrupted or"
                        " modified)"
                    )
        for row in tqdm(range(len(self)), desc="images", unit="img", disable=not progress):
            image_id = int(self._index[row]["image_id"])
            r = self.get(image_id, check=False)
            where = (
                f"region store {self.store_dir}, shard {self.shard_names[self._shard_of_row[row]]},"
                f" image id {image_id}"
            )
            if region_crc32(r.boxes, r.embeddings) != int(self._index[row]["crc32"]):
                raise RegionStoreError(f"{where}: regions fail their crc32 checksum")
            if not (np.isfinite(r.embeddings).all() and np.isfinite(r.boxes).all()):
                raise RegionStoreError(f"{where}: NaN or Inf in the stored regions")
        return self.summary()

    def summary(self) -> dict:
        """Counts and sizes: images, regions, bytes on disk vs the raw arrays."""
        disk = sum(
            os.path.getsize(p)
            for n in self.shard_names
            for k, p in shard_files(self.store_dir, n).items()
            if os.path.exists(p)
        ) + os.path.getsize(os.path.join(self.store_dir, MANIFEST))
        raw = self.num_regions * (
            self.embed_dim * EMBEDDING_DTYPE.itemsize + 4 * BOX_DTYPE.itemsize
        )
        counts = self._index["count"]
        return {
            "store": self.store_dir,
            "teacher": self.teacher,
            "embed_dim": self.embed_dim,
            "crop_scales": self.crop_scales,
            "num_shards": len(self.shard_names),
            "num_images": len(self),
            "num_regions": self.num_regions,
            "regions_per_image_max": int(counts.max()) if len(counts) else 0,
            "bytes_on_disk": disk,
            "bytes_raw_arrays": raw,
        }
