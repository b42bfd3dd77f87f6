"""
The region-embedding store: per image, the M distillation boxes and their CLIP
embeddings, sharded, crash-safe, memory-mapped (format: ``layout.py``).
"""

from .layout import FORMAT_VERSION, RegionStoreError
from .reader import ImageRegions, RegionStore
from .writer import ShardWriter, create_region_store, finalize_region_store

__all__ = [
    "FORMAT_VERSION",
    "RegionStoreError",
    "ImageRegions",
    "RegionStore",
    "ShardWriter",
    "create_region_store",
    "finalize_region_store",
]
