"""
Inference on your images and words: the one-call detector on a model folder, vocabularies
(names, files, datasets) and the predictor under it.
"""

from .detector import Detection, Detections, OpenVocabularyDetector, parse_words
from .model_folder import ModelFolder, ModelFolderError, find_model_folders
from .predictor import EXPORT_INFO_FILE, OpenVocabularyPredictor, export_info
from ..vocabulary.user import (
    BUILTIN_VOCABULARIES,
    Vocabulary,
    custom_vocabulary,
    dataset_vocabulary_embeddings,
    expanded_vocabulary,
    file_vocabulary,
    split_names,
)

__all__ = [
    "OpenVocabularyDetector",
    "Detection",
    "Detections",
    "parse_words",
    "ModelFolder",
    "ModelFolderError",
    "find_model_folders",
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
