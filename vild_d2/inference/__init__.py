"""Inference on your images and words: vocabularies (names, files, datasets) and one predictor."""

from .predictor import EXPORT_INFO_FILE, OpenVocabularyPredictor, export_info
from .vocabularies import (
    BUILTIN_VOCABULARIES,
    Vocabulary,
    custom_vocabulary,
    dataset_vocabulary_embeddings,
    expanded_vocabulary,
    file_vocabulary,
    split_names,
)

__all__ = [
    "OpenVocabularyPredictor",
    "EXPORT_INFO_FILE",
    "export_info",
    "Vocabulary",
    "BUILTIN_VOCABULARIES",
    "custom_vocabulary",
    "dataset_vocabulary_embeddings",
    "expanded_vocabulary",
    "file_vocabulary",
    "split_names",
]
