"""The training data loader: distillation regions attached when the config names a store."""

import logging
import os
from typing import List

import detectron2.utils.comm as comm
import torch
from detectron2.config import CfgNode as CN
from detectron2.data import (
    DatasetCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)

from ..config import ConfigError
from ..vocabulary.core import dataset_vocabulary, embeddings_provenance
from .distill_mapper import DistillDatasetMapper
from .distill_regions import distillation_needs_regions
from .image_check import check_images
from .region_store import RegionStore, RegionStoreError
from .region_store.images import check_images_match

__all__ = [
    "build_vild_train_loader",
    "training_dataset_and_mapper",
    "open_training_store",
    "check_datasets_registered",
    "check_training_inputs",
]

logger = logging.getLogger(__name__)


def open_training_store(cfg, dataset_dicts: List[dict]) -> RegionStore:
    """
    Open ``DATASETS.REGION_STORE_TRAIN`` and check it fits the run: its D equals
    ``MODEL.VILD.EMBED_DIM`` (ConfigError otherwise) and it holds every training image
    (RegionStoreError naming the store and the first missing image ids otherwise).
    """
    check_training_inputs(cfg)  # the store's D (ConfigError), also for callers of the API
    store = RegionStore(cfg.DATASETS.REGION_STORE_TRAIN)
    missing = [d["image_id"] for d in dataset_dicts if d["image_id"] not in store]
    if missing:
        raise RegionStoreError(
            f"region store {store.store_dir} has no regions for {len(missing)} of the "
            f"{len(dataset_dicts)} images of {tuple(cfg.DATASETS.TRAIN)}, e.g. image ids "
            f"{missing[:5]} (was it computed for these datasets?)"
        )
    check_images_match(
        store.store_dir, dataset_dicts, f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)}"
    )
    logger.info(
        f"Distillation regions: {store.store_dir} ({len(store)} images, {store.num_regions} "
        f"regions, teacher {store.teacher}, D = {store.embed_dim})"
    )
    return store


def build_vild_train_loader(cfg):
    """
    detectron2's training loader with :class:`DistillDatasetMapper`: vild_d2's
    augmentation (INPUT.LSJ) and, when ``DATASETS.REGION_STORE_TRAIN`` is set, the
    distillation regions of every image (the store is checked against the dataset first).
    Every training image is checked first (:func:`check_images`, cached in
    ``OUTPUT_DIR/.cache``), so a bad file stops training before the first iteration.
    """
    dataset, mapper = training_dataset_and_mapper(cfg)
    return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)


def training_dataset_and_mapper(cfg):
    """
    The training images of ``cfg`` (each file checked, see :func:`build_vild_train_loader`)
    and the training mapper, with the region store when the config names one.
    """
    dataset = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    if comm.is_main_process():
        checked = check_images(
            dataset,
            cache_dir=os.path.join(cfg.OUTPUT_DIR, ".cache"),
            what=f"training images of {tuple(cfg.DATASETS.TRAIN)}",
        )
        logger.info(
            f"Training images: {len(dataset)}, "
            + (f"{checked} checked" if checked else "check cached")
        )
        check_no_novel_annotations(cfg, dataset)
    comm.synchronize()
    if not cfg.DATASETS.REGION_STORE_TRAIN:
        return dataset, DistillDatasetMapper(cfg, is_train=True)
    store = open_training_store(cfg, dataset)
    return dataset, DistillDatasetMapper(cfg, is_train=True, region_store=store)


def check_no_novel_annotations(cfg: CN, dataset: List[dict]) -> None:
    """
    ConfigError if a ViLD model would train on annotations of the categories its training
    dataset marks novel (``novel_class_ids``): ViLD learns from base categories only, and
    the loss would stop at the first batch that holds one.
    """
    if cfg.MODEL.META_ARCHITECTURE != "ViLDRCNN" or not cfg.DATASETS.TRAIN:
        return
    vocab = dataset_vocabulary(cfg.DATASETS.TRAIN[0])
    if vocab is None or vocab.base_mask is None or bool(vocab.base_mask.all()):
        return
    novel = set(torch.nonzero(~vocab.base_mask).flatten().tolist())
    found = sorted({a["category_id"] for d in dataset for a in d.get("annotations", [])} & novel)
    if found:
        names = [vocab.names[c] for c in found[:5]]
        raise ConfigError(
            f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} holds annotations of {len(found)}"
            f" novel categories (e.g. {names}): ViLD trains on base categories only; use the"
            " open-vocabulary split with them removed (e.g. lvis_v1_train_ov,"
            " shapes_world_train_ov)"
        )


def check_datasets_registered(cfg: CN) -> None:
    """Raise ConfigError if DATASETS.TRAIN/TEST names a dataset that is not registered."""
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        names: List[str] = list(cfg.DATASETS[key])
        for name in names:
            if name not in registered:
                raise ConfigError(
                    f"DATASETS.{key} names dataset '{name}', which is not registered "
                    "(see datasets/README.md for vild_d2's datasets)"
                )


def check_training_inputs(cfg: CN) -> None:
    """
    Raise ConfigError if training could not start: a ViLD model with distillation
    (MODEL.VILD.IMAGE_LOSS_WEIGHT > 0) but no region store, or a store folder that does not
    open (no manifest, a shard missing or truncated), or whose D differs from
    MODEL.VILD.EMBED_DIM.
    """
    store = cfg.DATASETS.REGION_STORE_TRAIN
    distills = cfg.MODEL.META_ARCHITECTURE == "ViLDRCNN" and cfg.MODEL.VILD.IMAGE_LOSS_WEIGHT > 0
    if distills and not store:
        raise ConfigError(distillation_needs_regions("DATASETS.REGION_STORE_TRAIN is empty"))
    if store:
        try:  # opening checks the manifest and every shard's size (a truncated shard fails)
            opened = RegionStore(store)
            dim = opened.embed_dim
        except RegionStoreError as e:
            raise ConfigError(f"DATASETS.REGION_STORE_TRAIN: {e}") from None
        if dim != cfg.MODEL.VILD.EMBED_DIM:
            raise ConfigError(
                f"DATASETS.REGION_STORE_TRAIN: region store {store} holds D = {dim} embeddings, "
                f"but MODEL.VILD.EMBED_DIM is {cfg.MODEL.VILD.EMBED_DIM}"
            )
        if distills:
            check_same_teacher(cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS, opened)


def _teacher_key(teacher: str) -> str:
    """A teacher compared by name: a checkpoint's real path, or a CLIP model's name."""
    return os.path.realpath(teacher) if os.path.isfile(teacher) else teacher


def check_same_teacher(text_embeddings: str, store: RegionStore) -> None:
    """
    ConfigError if the training vocabulary's embeddings and the region store were made by
    two different CLIPs (as recorded beside the ``.npy`` and in the store's manifest): with
    one D (ViT-B/32 and ViT-B/16 are both 512) the student would be distilled towards one
    CLIP's space and classified in another's, without an error. Unrecorded: not checked.
    """
    text = embeddings_provenance(text_embeddings)
    manifest = store.manifest
    if not text.get("teacher") or not manifest.get("teacher"):
        return
    shas = (text.get("teacher_sha256"), manifest.get("extra", {}).get("teacher_sha256"))
    if all(shas):
        same = shas[0] == shas[1]
    else:
        same = _teacher_key(text["teacher"]) == _teacher_key(manifest["teacher"])
    if not same:
        raise ConfigError(
            f"two teachers: MODEL.VILD.TRAIN_TEXT_EMBEDDINGS {text_embeddings} was embedded by"
            f" {text['teacher']} ({shas[0] or 'no sha256'}), DATASETS.REGION_STORE_TRAIN"
            f" {store.store_dir} by {manifest['teacher']} ({shas[1] or 'no sha256'});"
            " distillation needs both from one CLIP: recompute one with the other's teacher"
        )
