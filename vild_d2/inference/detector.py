"""
ViLD in one call: a model folder in, an image and words in, named detections out.

    det = OpenVocabularyDetector.load("output/world/vild")          # or a converted folder
    for d in det("photo.jpg", ["red kite", "mug"], score_threshold=0.3):
        print(d.name, d.score, d.box)                                 # box: XYXY image pixels

A *model folder* is what ``train_net.py`` (or ``make demo``) leaves in its output folder
(``config.yaml`` + ``model_final.pth``) or what ``tools/convert_official_checkpoint.py``
writes. The folder also says which CLIP teacher embeds new words (:class:`ModelFolder`),
so the caller names none; each vocabulary is embedded once and reused.
"""

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.data import detection_utils
from detectron2.structures import Instances
from PIL import Image

from ..config import load_config
from ..data.images import read_image, to_eight_bit
from ..teacher import load_clip
from ..vocabulary.core import Vocabulary
from ..vocabulary.prompts import VILD_TEMPLATES, check_class_names, encode_vocabulary
from .model_folder import ModelFolder
from .predictor import OpenVocabularyPredictor

__all__ = ["Detection", "Detections", "OpenVocabularyDetector", "parse_words"]

VOCABULARY_CACHE_SIZE = 8  # vocabularies whose embeddings a detector keeps

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


@dataclass(frozen=True)
class Detection:
    """One detected object, in the pixels of the image as given."""

    name: str  # the word it was detected as
    score: float  # the model's score in [0, 1]
    box: Tuple[float, float, float, float]  # x0, y0, x1, y1 (XYXY), image pixels
    mask: Optional[np.ndarray] = None  # [H, W] bool, or None for a model without masks

    @property
    def area(self) -> float:
        """The box's area, pixels^2."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class Detections(Sequence[Detection]):
    """The detections of one image, by decreasing score; ``.instances`` for detectron2."""

    def __init__(self, instances: Instances, names: Sequence[str]):
        order = torch.argsort(instances.scores, descending=True, stable=True)
        self.instances: Instances = instances[order]  # image-sized, detectron2's fields
        self.names: List[str] = list(names)  # the vocabulary, indexed by pred_classes

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, k: int) -> Detection:
        inst = self.instances
        masks = inst.pred_masks if inst.has("pred_masks") else None
        return Detection(
            name=self.names[int(inst.pred_classes[k])],
            score=float(inst.scores[k]),
            box=tuple(float(v) for v in inst.pred_boxes.tensor[k].tolist()),
            mask=masks[k].numpy().astype(bool) if masks is not None else None,
        )

    def __iter__(self) -> Iterator[Detection]:
        return (self[k] for k in range(len(self)))

    def above(self, score_threshold: float) -> "Detections":
        """Those scoring at least ``score_threshold`` (no model run)."""
        return Detections(self.instances[self.instances.scores >= score_threshold], self.names)

    def records(self) -> List[dict]:
        """Plain rows (name, score, box XYXY rounded to 0.1 px), e.g. for a table or json."""
        return [
            {"name": d.name, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]}
            for d in self
        ]


def parse_words(words: Union[str, Sequence[str]]) -> List[str]:
    """
    ``["a", "b"]``, ``"a, b"`` or the official Colab's ``"a; b"`` -> ``["a", "b"]``
    (a string with a ``;`` splits on ``;``, else on ``,``). VocabularyError if none is left,
    one is blank or one repeats.
    """
    if isinstance(words, str):
        sep = ";" if ";" in words else ","
        words = [w.strip() for w in words.split(sep)] if words.strip() else []
    else:
        words = [str(w).strip() for w in words]
    return check_class_names(words, source="the words to detect")


class OpenVocabularyDetector:
    """
    A ViLD model ready for any words: ``detector(image, words, **knobs) -> Detections``.

    The knobs (the official Colab's names in docs/inference.md) are keyword arguments of
    each call: ``score_threshold`` (detection score, default 0.5), ``nms_threshold``
    (per-class IoU, default the config's ``ROI_HEADS.NMS_THRESH_TEST``),
    ``min_box_area`` (pixels^2 of the image as given, default 0) and ``max_detections``
    (default the config's ``TEST.DETECTIONS_PER_IMAGE``).
    """

    def __init__(self, folder: ModelFolder, device: Optional[str] = None):
        self.folder = folder
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # inference only: no dataset of the training run is needed (nor may be present)
        opts = ["MODEL.DEVICE", self.device, "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
        cfg = load_config(folder.config_file, folder.config_opts + opts)
        cfg.freeze()
        self.cfg = cfg
        self.predictor = OpenVocabularyPredictor(cfg, device=self.device)
        self._teacher = None  # the CLIP model, loaded on the first new vocabulary
        self._vocabularies: "OrderedDict[Tuple[str, ...], Vocabulary]" = OrderedDict()

    @classmethod
    def load(
        cls, path: str, device: Optional[str] = None, teacher: Optional[str] = None
    ) -> "OpenVocabularyDetector":
        """
        The model of a model folder (see :mod:`vild_d2.inference.model_folder`).
        ``teacher``: a local CLIP checkpoint file to embed words with instead of the one
        the folder names (e.g. ViT-B/32 saved on a machine without internet).
        """
        folder = ModelFolder.open(path)
        if teacher is not None:
            folder.teacher = teacher
        return cls(folder, device)

    @property
    def teacher(self) -> str:
        """The CLIP (name or checkpoint) that embeds words for this model."""
        return self.folder.teacher

    def vocabulary(self, words: Union[str, Sequence[str]]) -> Vocabulary:
        """``words`` embedded by the teacher (ViLD's 63 prompts), computed once per list."""
        names = tuple(parse_words(words))
        if names in self._vocabularies:
            self._vocabularies.move_to_end(names)
            return self._vocabularies[names]
        if self._teacher is None:
            self._teacher, _ = load_clip(self.teacher, device=self.device)
        embeddings = encode_vocabulary(self._teacher, names, VILD_TEMPLATES)  # progress if long
        if embeddings.shape[1] != self.predictor.embed_dim:
            raise ValueError(
                f"teacher {self.teacher} embeds words in D = {embeddings.shape[1]}, the model"
                f" in {self.folder.path} expects D = {self.predictor.embed_dim}"
            )
        vocabulary = Vocabulary(list(names), embeddings, source=f"embedded by {self.teacher}")
        self._vocabularies[names] = vocabulary
        while len(self._vocabularies) > VOCABULARY_CACHE_SIZE:
            self._vocabularies.popitem(last=False)
        return vocabulary

    def __call__(
        self,
        image: ImageLike,
        words: Union[str, Sequence[str]],
        score_threshold: float = 0.5,
        nms_threshold: Optional[float] = None,
        min_box_area: float = 0.0,
        max_detections: Optional[int] = None,
    ) -> Detections:
        """
        Args:
            image: a file path, a PIL image, or an [H, W, 3] (or [H, W]) uint8 RGB array.
            words: a list of names, or one string of names separated by "," (or ";").

        Returns:
            :class:`Detections` by decreasing score, boxes and masks in the image's pixels.
        """
        _check_knobs(score_threshold, nms_threshold, min_box_area, max_detections)
        pixels = read_image_like(image, self.predictor.input_format)  # before the teacher loads
        vocabulary = self.vocabulary(words)
        self.predictor.set_vocabulary(vocabulary)
        instances = self.predictor(pixels, score_threshold, nms_threshold, max_detections)
        instances = instances.to("cpu")
        if min_box_area > 0:
            instances = instances[instances.pred_boxes.area() >= min_box_area]
        return Detections(instances, vocabulary.names)


def _check_knobs(score_threshold, nms_threshold, min_box_area, max_detections) -> None:
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold {score_threshold} is not in [0, 1]")
    if nms_threshold is not None and not 0.0 < nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold {nms_threshold} is not in (0, 1]")
    if min_box_area < 0:
        raise ValueError(f"min_box_area {min_box_area} is negative (pixels^2)")
    if max_detections is not None and (int(max_detections) != max_detections or max_detections < 1):
        raise ValueError(f"max_detections {max_detections} is not a positive integer")


def read_image_like(image: ImageLike, input_format: str) -> np.ndarray:
    """[H, W, 3] uint8 in ``input_format`` (e.g. "BGR") from a path, PIL image or RGB array."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        try:  # looked up at call time: vild_d2 makes it read 16-bit images faithfully
            return read_image(path, format=input_format)
        except (OSError, SyntaxError) as e:  # PIL's errors for truncated or unknown files
            raise ValueError(f"{path}: not a readable image ({e})") from None
    if isinstance(image, Image.Image):
        return detection_utils.convert_PIL_to_numpy(to_eight_bit(image), input_format)
    if isinstance(image, np.ndarray):
        return _array_to_format(image, input_format)
    raise TypeError(f"image: a path, PIL image or numpy array, not a {type(image).__name__}")


def _array_to_format(array: np.ndarray, input_format: str) -> np.ndarray:
    """An RGB(A) or grey uint8 array as [H, W, 3] in ``input_format``."""
    if array.dtype != np.uint8:
        raise ValueError(f"image array of dtype {array.dtype}: give uint8 pixels (0 ... 255)")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(
            f"image array of shape {tuple(array.shape)}: expected [H, W, 3] RGB, [H, W, 4]"
            " RGBA or [H, W] grey, with at least one pixel"
        )
    rgb = array[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if input_format == "BGR" else rgb)
