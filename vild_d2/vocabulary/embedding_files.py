"""
Load and validate a vocabulary: a matrix of text embeddings [C, D], one row per category.

Files are ``.npy`` (any float dtype) or ``.pt``/``.pth`` (a tensor, or a dict holding it
under ``"embeddings"``). Rows need not be normalised (e.g. Detic's
``lvis_v1_clip_a+cname.npy``): they are L2-normalised here, in float32.
"""

import os
from typing import Optional, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode as CN

from ..config import ConfigError
from .core import Vocabulary, VocabularyError, dataset_vocabulary

__all__ = [
    "load_text_embeddings",
    "check_text_embeddings",
    "VocabularyError",
    "training_vocabulary",
    "evaluation_vocabulary",
    "evaluation_embeddings_file",
    "check_test_vocabularies",
    "check_training_vocabulary",
]


def _read(path: str) -> torch.Tensor:
    if path.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
            return torch.from_numpy(np.asarray(array, dtype=np.float32))
        except (
            ValueError,
            OSError,
            EOFError,
            TypeError,
        ) as e:  # truncated, garbage, pickled or not numbers
            raise VocabularyError(f"{path}: not a readable .npy array of floats ({e})") from None
    if path.endswith((".pt", ".pth")):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as e:  # torch raises several kinds; its advice to unpickle anything is not for us
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise VocabularyError(f"{path}: not a readable tensor file ({first})") from None
        if isinstance(obj, dict):
            if "embeddings" not in obj:
                raise VocabularyError(f"{path}: a dict without an 'embeddings' entry")
            obj = obj["embeddings"]
        if not isinstance(obj, torch.Tensor):
            raise VocabularyError(f"{path}: holds a {type(obj).__name__}, not a tensor")
        return obj.float()
    raise VocabularyError(f"{path}: unknown extension (expected .npy, .pt or .pth)")


def check_text_embeddings(
    embeddings: torch.Tensor,
    *,
    name: str,
    embed_dim: int,
    num_rows: Optional[int] = None,
    rows_of: str = "",
) -> torch.Tensor:
    """
    Validate a vocabulary tensor and return it L2-normalised in float32.

    Args:
        embeddings: [C, D] tensor.
        name: how to call it in errors (a file name, a config key, ``"tensor"``).
        embed_dim: the model's D.
        num_rows: the expected C, if known.
        rows_of: what has ``num_rows`` classes (e.g. "dataset 'lvis_v1_val'").
    """
    if embeddings.dim() != 2:
        raise VocabularyError(
            f"{name}: expected a [C, D] matrix, got shape {tuple(embeddings.shape)}"
        )
    if embeddings.shape[0] == 0:
        raise VocabularyError(f"{name}: the vocabulary is empty (shape {tuple(embeddings.shape)})")
    if embeddings.shape[1] != embed_dim:
        raise VocabularyError(
            f"{name}: embedding dimension {embeddings.shape[1]} (shape "
            f"{tuple(embeddings.shape)}) != the model's D = {embed_dim} (MODEL.VILD.EMBED_DIM)"
        )
    if num_rows is not None and embeddings.shape[0] != num_rows:
        raise VocabularyError(
            f"{name}: {embeddings.shape[0]} rows (shape {tuple(embeddings.shape)}) but "
            f"{rows_of or 'the vocabulary'} has {num_rows} classes"
        )
    embeddings = embeddings.detach().float()
    bad = (~torch.isfinite(embeddings).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        raise VocabularyError(f"{name}: rows {bad[:10]} hold NaN or Inf")
    norms = embeddings.norm(dim=1)
    zero = (norms < 1e-12).nonzero().flatten().tolist()
    if zero:
        raise VocabularyError(f"{name}: rows {zero[:10]} are all zeros (no direction)")
    return embeddings / norms[:, None]


def load_text_embeddings(
    path: str,
    *,
    embed_dim: int,
    config_key: str,
    num_rows: Optional[int] = None,
    rows_of: str = "",
) -> torch.Tensor:
    """
    Read the vocabulary file ``path`` (named by config key ``config_key``) and validate
    it with :func:`check_text_embeddings`.

    Returns:
        [C, D] float32 tensor with unit-norm rows.
    """
    if not path:
        raise VocabularyError(f"{config_key} is empty: name a [C, D] text-embedding file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{config_key}: text-embedding file not found: {path}")
    return check_text_embeddings(
        _read(path),
        name=f"{path} ({config_key})",
        embed_dim=embed_dim,
        num_rows=num_rows,
        rows_of=rows_of,
    )


def _with_names(emb: torch.Tensor, vocab: Optional[Vocabulary], source: str) -> Vocabulary:
    """``emb`` as a Vocabulary: the dataset's names and base mask, or "class i" without one."""
    if vocab is None:
        return Vocabulary(
            names=[f"class {i}" for i in range(len(emb))], embeddings=emb, source=source
        )
    return Vocabulary(names=vocab.names, embeddings=emb, source=source, base_mask=vocab.base_mask)


def training_vocabulary(cfg) -> Vocabulary:
    """
    The training vocabulary of a config: ``MODEL.VILD.TRAIN_TEXT_EMBEDDINGS`` checked
    against ``MODEL.ROI_HEADS.NUM_CLASSES`` and ``DATASETS.TRAIN[0]``'s categories.

    Returns:
        [C, D] unit-norm embeddings, with the names and base mask of ``DATASETS.TRAIN[0]``
        (base mask None when no dataset is known).
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    vocab = dataset_vocabulary(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None
    if vocab is not None and vocab.num_classes != num_classes:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes} but {vocab.source} has "
            f"{vocab.num_classes} categories"
        )
    emb = load_text_embeddings(
        cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS,
        embed_dim=cfg.MODEL.VILD.EMBED_DIM,
        config_key="MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        num_rows=num_classes,
        rows_of="MODEL.ROI_HEADS.NUM_CLASSES",
    )
    return _with_names(emb, vocab, cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS)


def evaluation_embeddings_file(cfg, index: int) -> Tuple[str, str]:
    """
    The text-embedding file of test dataset ``index`` and the config key that names it:
    ``DATASETS.TEXT_EMBEDDINGS_TEST[index]`` if that list is set, else
    ``MODEL.VILD.TEST_TEXT_EMBEDDINGS``, else the training vocabulary.
    """
    per_dataset = list(cfg.DATASETS.TEXT_EMBEDDINGS_TEST)
    names = list(cfg.DATASETS.TEST)
    if per_dataset:
        if len(per_dataset) != len(names):
            raise VocabularyError(
                f"DATASETS.TEXT_EMBEDDINGS_TEST has {len(per_dataset)} files but DATASETS.TEST "
                f"has {len(names)} datasets: give one file per test dataset, in the same order"
            )
        return per_dataset[index], f"DATASETS.TEXT_EMBEDDINGS_TEST[{index}]"
    if cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS:
        return cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS, "MODEL.VILD.TEST_TEXT_EMBEDDINGS"
    return (
        cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS,
        "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS (no test vocabulary set)",
    )


def evaluation_vocabulary(cfg, index: int) -> Vocabulary:
    """
    The vocabulary of test dataset ``DATASETS.TEST[index]`` (see
    :func:`evaluation_embeddings_file`), its rows checked against that dataset's categories.
    Without test datasets (index 0 of an empty list): the test or training file, unchecked.

    Returns:
        [C, D] unit-norm embeddings, with the test dataset's names and base mask (base mask
        None when no dataset is known).
    """
    names = list(cfg.DATASETS.TEST)
    vocab = dataset_vocabulary(names[index]) if index < len(names) else None
    path, key = (
        evaluation_embeddings_file(cfg, index)
        if names
        else (
            cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS or cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS,
            "MODEL.VILD.TEST_TEXT_EMBEDDINGS",
        )
    )
    emb = load_text_embeddings(
        path,
        embed_dim=cfg.MODEL.VILD.EMBED_DIM,
        config_key=key,
        num_rows=vocab.num_classes if vocab else None,
        rows_of=vocab.source if vocab else "",
    )
    return _with_names(emb, vocab, path)


def check_training_vocabulary(cfg: CN) -> None:
    """
    Raise ConfigError if a ViLD model's training vocabulary does not fit its config (a
    missing file, another D, fewer or more rows than MODEL.ROI_HEADS.NUM_CLASSES): at
    start-up, in one line, not as a traceback from inside the model's construction.
    """
    if cfg.MODEL.META_ARCHITECTURE not in ("ViLDRCNN", "OfficialViLDRCNN"):
        return
    try:
        training_vocabulary(cfg)
    except (VocabularyError, FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None


def check_test_vocabularies(cfg: CN) -> None:
    """
    Raise ConfigError if a ViLD model could not score some DATASETS.TEST entry with its
    own vocabulary (DATASETS.TEXT_EMBEDDINGS_TEST of another length, a file whose rows do
    not match the dataset's categories, ...): at start-up, not after training.
    """
    if cfg.MODEL.META_ARCHITECTURE != "ViLDRCNN":
        return
    for index in range(len(cfg.DATASETS.TEST)):
        try:
            evaluation_vocabulary(cfg, index)
        except (VocabularyError, FileNotFoundError) as e:
            raise ConfigError(f"test dataset '{cfg.DATASETS.TEST[index]}': {e}") from None
