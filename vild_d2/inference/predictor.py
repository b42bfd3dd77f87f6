"""
One image in, detections out, from an eager checkpoint or an exported TorchScript file,
with a vocabulary that can change between images.
"""

import json
import os
import warnings
from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances

from ..checkpoint.files import check_weights
from ..checkpoint.strict import load_inference_weights
from ..data.augmentation import build_test_resize
from ..export import inference_module
from ..modeling.official import official_postprocess
from ..vocabulary.user import Vocabulary

__all__ = ["OpenVocabularyPredictor", "EXPORT_INFO_FILE", "export_info"]

# the json kept inside an exported TorchScript file (torch.jit.save's _extra_files), and its
# layout: 2 added tf1_resize_test (files without a version are layout 1)
EXPORT_INFO_FILE = "vild_d2.json"
EXPORT_INFO_VERSION = 2


def export_info(cfg, method: str, ensemble: bool) -> dict:
    """What inference around an exported module needs to know of the config."""
    return {
        "input_format": cfg.INPUT.FORMAT,
        "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
        "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
        "tf1_resize_test": cfg.INPUT.TF1_RESIZE_TEST,
        # detections into the image as the official release does (see OfficialViLDRCNN)
        "official_postprocess": cfg.MODEL.META_ARCHITECTURE == "OfficialViLDRCNN",
        "embed_dim": cfg.MODEL.VILD.EMBED_DIM,
        "ensemble": ensemble,
        "mask_on": cfg.MODEL.MASK_ON,
        "export_method": method,
        "format_version": EXPORT_INFO_VERSION,
    }


def _upgraded_export_info(info: dict, path: str) -> dict:
    """An exported file's info in the current layout; ValueError for a newer one."""
    version = info.get("format_version", 1)
    if version > EXPORT_INFO_VERSION:
        raise ValueError(
            f"{path}: exported by a newer vild_d2 (info layout {version}, this one reads up to"
            f" {EXPORT_INFO_VERSION}); upgrade vild_d2 or export again"
        )
    if version < 2:
        info = {**info, "tf1_resize_test": False}  # layout 1 resized the detectron2 way only
    return {**info, "format_version": EXPORT_INFO_VERSION}


class OpenVocabularyPredictor:
    """
    Like detectron2's DefaultPredictor (``predictor(image)`` with an ``INPUT.FORMAT``
    HxWx3 uint8 array -> ``Instances`` at the image's size), for a ViLD model built from
    ``cfg`` + ``cfg.MODEL.WEIGHTS`` or loaded from an exported TorchScript file, and with
    :meth:`set_vocabulary`. An eager model detects its config's test vocabulary until
    another is set. Any other detectron2 model of ``cfg`` (a fixed classifier, such as the
    supervised Mask R-CNN baseline) runs too, with its own classes only.
    """

    def __init__(self, cfg=None, torchscript: Optional[str] = None, device: str = "cpu"):
        self.device = torch.device(device)
        self.model, self.module = None, None
        if torchscript is not None:
            self.module, self.info = _load_torchscript(torchscript, self.device)
        else:
            self.model, self.info = _build_eager(cfg, self.device)
        self.resize = build_test_resize(
            self.info["min_size_test"],
            self.info["max_size_test"],
            self.info["tf1_resize_test"],
        )
        self.vocabulary: Optional[Vocabulary] = None

    @property
    def open_vocabulary(self) -> bool:
        """Whether :meth:`set_vocabulary` can change what the model detects."""
        return self.model is None or hasattr(self.model, "set_vocabulary")

    @property
    def embed_dim(self) -> int:
        return int(self.info["embed_dim"])

    @property
    def input_format(self) -> str:
        return self.info["input_format"]

    @property
    def default_score_threshold(self) -> float:
        """The model's own test score threshold (0 if unknown, e.g. an exported file's)."""
        return float(self.info.get("score_thresh_test", 0.0))

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        if not self.open_vocabulary:
            raise ValueError(
                f"{type(self.model).__name__} has a fixed classifier: it detects the classes it"
                " was trained on, and takes no vocabulary"
            )
        if vocabulary.attribute_embeddings is not None and self.model is None:
            raise ValueError(
                "noun x attribute vocabularies need the eager model (a config and MODEL.WEIGHTS), "
                "not an exported file"
            )
        if self.model is not None:
            self.model.set_vocabulary(
                vocabulary.embeddings, vocabulary.base_mask, vocabulary.attribute_embeddings
            )
        self.vocabulary = vocabulary

    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray,
        score_threshold: Optional[float] = None,
        nms_threshold: Optional[float] = None,
        max_detections: Optional[int] = None,
    ) -> Instances:
        """
        Args:
            image: [H, W, 3] uint8 in ``input_format`` channel order.
            score_threshold, nms_threshold, max_detections: for this call, instead of the
                config's ``ROI_HEADS.SCORE_THRESH_TEST``, ``ROI_HEADS.NMS_THRESH_TEST`` and
                ``TEST.DETECTIONS_PER_IMAGE`` (an exported model: the score only). Masks
                are pasted at the image's size only for the detections kept.

        Returns:
            Instances of size (H, W): pred_boxes, scores, pred_classes (indices into the
            vocabulary's names) and, with a mask head, pred_masks [N, H, W] bool.
        """
        if self.module is not None and self.vocabulary is None:
            raise ValueError("set a vocabulary first (an exported model has none of its own)")
        height, width = image.shape[:2]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(self.device)
        if self.model is not None:
            inputs = [{"image": tensor, "height": height, "width": width}]
            with inference_knobs(self.model, score_threshold, nms_threshold, max_detections):
                return self.model.inference(inputs)[0]["instances"]
        args = [tensor.float(), self.vocabulary.embeddings.to(self.device)]
        if self.info["ensemble"]:
            mask = self.vocabulary.base_mask
            args.append(
                (
                    mask
                    if mask is not None
                    else torch.zeros(len(self.vocabulary.embeddings), dtype=torch.bool)
                ).to(self.device)
            )
        try:
            out = self.module(*args)
        except torch.jit.Error as e:  # the module's input checks (check_inputs): their message
            raise ValueError(_script_error_message(e)) from None
        inst = Instances(tuple(resized.shape[:2]))
        inst.pred_boxes = Boxes(out["boxes"])
        inst.scores = out["scores"]
        inst.pred_classes = out["classes"]
        if "masks" in out:
            inst.pred_masks = out["masks"]
        if score_threshold is not None:  # before the masks are pasted at the image's size
            inst = inst[inst.scores >= score_threshold]
        if self.info.get("official_postprocess", False):
            return official_postprocess(inst, inst.image_size, height, width)
        return detector_postprocess(inst, height, width)


def _load_torchscript(path: str, device: torch.device):
    """The module exported by tools/export_model.py at ``path``, and its export info."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TorchScript file not found: {path}")
    extra = {EXPORT_INFO_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in torch 2.x
        try:
            module = torch.jit.load(path, map_location=device, _extra_files=extra)
        except RuntimeError as e:  # torch's text goes on about corrupted checkpoints
            reason = str(e).split(". ")[0].replace("PytorchStreamReader failed ", "")
            raise ValueError(
                f"{path}: not a TorchScript file exported by tools/export_model.py ({reason})"
            ) from None
    if not extra[EXPORT_INFO_FILE]:
        raise ValueError(
            f"{path}: not exported by tools/export_model.py (no {EXPORT_INFO_FILE} inside)"
        )
    return module, _upgraded_export_info(json.loads(extra[EXPORT_INFO_FILE]), path)


def _build_eager(cfg, device: torch.device):
    """The model of ``cfg`` with ``cfg.MODEL.WEIGHTS`` (strictly) on ``device``, and its info."""
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: name the trained model's checkpoint")
    check_weights(cfg)  # ConfigError (a ValueError) on a missing or unreadable file
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = str(device)
    model = build_model(cfg).eval()
    load_inference_weights(model, cfg.MODEL.WEIGHTS)
    info = export_info(cfg, "eager", getattr(model.roi_heads, "image_head", None) is not None)
    info["score_thresh_test"] = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    if hasattr(model, "set_vocabulary"):
        inference_module(model)  # refuses what cannot run with a runtime vocabulary
    return model, info


@contextmanager
def inference_knobs(model, score_threshold=None, nms_threshold=None, max_detections=None):
    """Set the box predictors' test thresholds (None: keep) for one call; restore after."""
    heads = [m for m in model.modules() if isinstance(m, FastRCNNOutputLayers)]
    saved = [(h.test_score_thresh, h.test_nms_thresh, h.test_topk_per_image) for h in heads]
    try:
        for head, (score, nms, topk) in zip(heads, saved):
            head.test_score_thresh = score if score_threshold is None else score_threshold
            head.test_nms_thresh = nms if nms_threshold is None else nms_threshold
            head.test_topk_per_image = topk if max_detections is None else int(max_detections)
        yield
    finally:
        for head, values in zip(heads, saved):
            head.test_score_thresh, head.test_nms_thresh, head.test_topk_per_image = values


def _script_error_message(error: Exception) -> str:
    """The ``ValueError: ...`` line of a TorchScript error (its traceback dropped)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if line.startswith(("builtins.ValueError:", "ValueError:"))]
    return "exported model: " + (raised[-1].split(":", 1)[1].strip() if raised else lines[-1])
