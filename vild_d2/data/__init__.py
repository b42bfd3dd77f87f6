"""
Datasets (registration, generators), the region-embedding store, and the training data
path that attaches distillation regions.
"""

from . import datasets  # noqa: F401  (registers the builtin datasets)
from .build import build_vild_train_loader, open_training_store
from .distill_mapper import DistillDatasetMapper, transform_regions
from .region_store import (
    RegionStore,
    RegionStoreError,
    ShardWriter,
    create_region_store,
    finalize_region_store,
)
