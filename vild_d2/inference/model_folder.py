"""
A *model folder*: everything needed to run one open-vocabulary model on new words.

* a trained model's output folder (``train_net.py``, ``make demo``): ``config.yaml`` and
  ``model_final.pth``; its teacher is named in the ``.json`` that
  ``tools/precompute_text_embeddings.py`` wrote beside ``MODEL.VILD.TRAIN_TEXT_EMBEDDINGS``;
* a converted official checkpoint (``tools/convert_official_checkpoint.py``): the same two
  files, ``class_embeddings.npy`` and ``conversion.json``; the release's classifier was
  embedded by CLIP ViT-B/32 (the ``.json`` beside ``class_embeddings.npy`` says so).
"""

import os
from dataclasses import dataclass, field
from typing import List, Optional

from ..checkpoint.convert import (
    CONFIG_FILE,
    RELEASE_TEACHER,
    REPORT_FILE,
    VOCABULARY_FILE,
    WEIGHTS_FILE,
)
from ..config import ConfigError, load_config
from ..errors import VildD2Error
from ..vocabulary.core import VocabularyError, embeddings_provenance

__all__ = ["ModelFolder", "ModelFolderError", "find_model_folders", "OPEN_VOCABULARY_ARCHS"]

# the file names are those train_net.py (config.yaml, model_final.pth) and the converter use
# architectures whose classifier is a matrix of text embeddings (any vocabulary at test time)
OPEN_VOCABULARY_ARCHS = ("ViLDRCNN", "OfficialViLDRCNN")
EXAMPLE_WORDS = 6  # how many of the training vocabulary's names a folder offers as examples
RELEASE_EXAMPLE_WORDS = ["person", "cat", "teapot", "umbrella", "red kite"]


class ModelFolderError(VildD2Error, ValueError):
    """A folder that is not a usable open-vocabulary model folder; names it and why."""


@dataclass
class ModelFolder:
    """What :class:`OpenVocabularyDetector` needs of a model folder."""

    path: str  # the folder
    config_opts: List[str]  # "KEY VALUE" overrides that point the config at this folder
    teacher: str  # the CLIP (name or checkpoint path) that embeds new words for this model
    example_words: List[str] = field(default_factory=list)  # words worth trying first
    test_dataset: Optional[str] = None  # the config's DATASETS.TEST[0], if any

    @property
    def config_file(self) -> str:
        return os.path.join(self.path, CONFIG_FILE)

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @classmethod
    def open(cls, path: str) -> "ModelFolder":
        """Read ``path``; ModelFolderError (or ConfigError) naming it if it cannot serve."""
        for needed in (CONFIG_FILE, WEIGHTS_FILE):
            if not os.path.isfile(os.path.join(path, needed)):
                raise ModelFolderError(
                    f"{path}: not a model folder (no {needed}; a trained model's output folder"
                    " or a folder written by tools/convert_official_checkpoint.py has one)"
                )
        opts = ["MODEL.WEIGHTS", os.path.join(path, WEIGHTS_FILE)]
        converted = os.path.isfile(os.path.join(path, REPORT_FILE))
        if converted:  # the folder may have moved since the conversion wrote absolute paths
            vocabulary = os.path.join(path, VOCABULARY_FILE)
            opts += ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", vocabulary]
            opts += ["MODEL.VILD.TEST_TEXT_EMBEDDINGS", vocabulary]
        cfg = load_config(os.path.join(path, CONFIG_FILE), opts)
        arch = cfg.MODEL.META_ARCHITECTURE
        if arch not in OPEN_VOCABULARY_ARCHS:
            raise ModelFolderError(
                f"{path}: a {arch} model, not an open-vocabulary one (its classifier is not a"
                f" matrix of text embeddings; {' or '.join(OPEN_VOCABULARY_ARCHS)} are)"
            )
        embeddings = cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS
        try:
            info = embeddings_provenance(embeddings)
        except VocabularyError as e:
            raise ModelFolderError(str(e)) from None
        teacher, names = info.get("teacher"), info.get("class_names")
        if teacher is None and converted:
            teacher = RELEASE_TEACHER  # folders converted before the .json was written
        if teacher is None:
            raise ModelFolderError(
                f"{path}: which CLIP embeds new words for it is unknown: {embeddings} has no"
                " .json beside it naming its teacher (tools/precompute_text_embeddings.py"
                " writes one)"
            )
        examples = _examples(names) if names else RELEASE_EXAMPLE_WORDS
        test = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        return cls(path, opts, teacher, examples, test)


def _examples(names: List[str]) -> List[str]:
    """Up to EXAMPLE_WORDS names spread over the vocabulary."""
    step = max(1, len(names) // EXAMPLE_WORDS)
    return list(names[::step][:EXAMPLE_WORDS])


def find_model_folders(root: str, depth: int = 2) -> List[ModelFolder]:
    """Open-vocabulary model folders at or under ``root`` (``depth`` levels), by path."""
    found: List[ModelFolder] = []
    if not os.path.isdir(root):
        return found
    for folder, subfolders, files in os.walk(root):
        if folder[len(root) :].count(os.sep) >= depth:
            subfolders[:] = []
        subfolders.sort()
        if CONFIG_FILE in files and WEIGHTS_FILE in files:
            model = _try_open(folder)
            if model is not None:
                found.append(model)
    return sorted(found, key=lambda m: m.path)


def _try_open(folder: str) -> Optional[ModelFolder]:
    try:
        return ModelFolder.open(folder)
    except (ModelFolderError, ConfigError):
        return None  # e.g. the supervised Mask R-CNN beside the ViLD models
