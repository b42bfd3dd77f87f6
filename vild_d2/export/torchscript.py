"""
A ViLD model as one TorchScript module whose vocabulary is an input.

``ViLDInferenceModule.forward(image, class_embeddings)`` (ViLD, ViLD-text) and
``ViLDEnsembleInferenceModule.forward(image, class_embeddings, base_mask)``
(ViLD-ensemble) run the whole detector on one image and return plain tensors, so the
saved file loads in a process that imports only torch and torchvision (TorchScript
cannot reload a module that returns detectron2's ``Instances``):

    image             [3, H, W] uint8 or float, channels in ``INPUT.FORMAT`` order, already
                      resized the way the config's test transform does (as detectron2's
                      exported models expect; boxes come back in these pixels)
    class_embeddings  [C, D] text embeddings of any norm (normalised inside)
    base_mask         [C] bool, the classes that were base in training (ensemble only)
    returns           {"boxes": [N, 4] float XYXY, "scores": [N], "classes": [N] int64 in
                      [0, C), "masks": [N, 1, M, M] mask probabilities in box coordinates
                      (Mask R-CNN's 28x28; paste them into the image with detectron2's or
                      torchvision's ``paste_masks_in_image``) — only with a mask head}

Inputs are checked inside the module (:func:`check_inputs`, :func:`check_base_mask`):
a bad vocabulary or image raises a ValueError saying what was expected. Both export
methods give the same numbers as eager inference (``model.inference(...,
do_postprocess=False)`` after ``set_vocabulary``): *scripting* compiles the code, so any
image size and vocabulary size work; *tracing* records one run and generalises to other
vocabulary sizes and image sizes as far as detectron2's tracing support goes (tested for
vocabularies; prefer scripting).
"""

import copy
import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.export import scripting_with_instances
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
from detectron2.structures import Boxes, ImageList
from torch import nn

from ..compat.quiet_imports import JIT_DEPRECATION
from ..errors import VildD2Error
from ..modeling.losses import ensemble_scores
from ..modeling.meta_arch import ViLDRCNN
from ..modeling.official import OfficialViLDRCNN, clip_boxes_inclusive, official_detections
from ..modeling.official.layers import FrozenBatchNorm

__all__ = [
    "ViLDInferenceModule",
    "ViLDEnsembleInferenceModule",
    "inference_module",
    "export_model",
    "EXPORT_METHODS",
    "ExportError",
    "check_inputs",
    "check_base_mask",
]

EXPORT_METHODS = ("scripting", "tracing")
# what Instances hold inside the exported code (detectron2's scripting needs them declared)
_INSTANCE_FIELDS = {
    "proposal_boxes": Boxes,
    "objectness_logits": torch.Tensor,
    "pred_boxes": Boxes,
    "scores": torch.Tensor,
    "pred_classes": torch.Tensor,
    "pred_masks": torch.Tensor,
}


class ExportError(VildD2Error, ValueError):
    """A model or example input that cannot be exported; says which and why."""


def _check_inputs(
    image: torch.Tensor, class_embeddings: torch.Tensor, embed_dim: int
) -> torch.Tensor:
    """
    Refuse, with what was expected, inputs that would give a silent wrong result (a NaN row
    empties every detection) or an error that names nothing; returns ``class_embeddings``.
    Scripted, so that a traced module keeps the checks too (hence a tensor returned).
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError("image: expected a [3, H, W] tensor, got shape " + str(image.shape))
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(
            "image: expected at least 1x1 pixels, got " + str(image.shape[1]) + "x"
            + str(image.shape[2])
        )  # fmt: skip
    if not bool(torch.isfinite(image.float()).all()):
        raise ValueError("image: holds NaN or Inf")
    if class_embeddings.dim() != 2 or class_embeddings.shape[1] != embed_dim:
        raise ValueError(
            "class_embeddings: expected [C, " + str(embed_dim) + "] (the model's D), got shape "
            + str(class_embeddings.shape)
        )  # fmt: skip
    if class_embeddings.shape[0] == 0:
        raise ValueError("class_embeddings: the vocabulary is empty (C = 0)")
    finite = torch.isfinite(class_embeddings.float()).all(dim=1)
    if not bool(finite.all()):
        rows: List[int] = torch.nonzero(~finite).flatten()[:10].tolist()
        raise ValueError("class_embeddings: rows " + str(rows) + " hold NaN or Inf")
    zero = class_embeddings.float().norm(p=2, dim=1) < 1e-12
    if bool(zero.any()):
        rows_zero: List[int] = torch.nonzero(zero).flatten()[:10].tolist()
        raise ValueError("class_embeddings: rows " + str(rows_zero) + " are all zeros")
    return class_embeddings


def _check_base_mask(base_mask: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """ViLD-ensemble's base mask: one bool per class of the vocabulary; returns it."""
    if base_mask.dtype != torch.bool or base_mask.shape != [class_embeddings.shape[0]]:
        raise ValueError(
            "base_mask: expected a bool tensor of shape [" + str(class_embeddings.shape[0])
            + "] (one per class), got " + str(base_mask.dtype) + " " + str(base_mask.shape)
        )  # fmt: skip
    return base_mask


def _script_quietly(fn):
    """``torch.jit.script(fn)`` without torch >= 2.10's deprecation warning: scripting is
    what this module exports with, and it runs at import time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
        return torch.jit.script(fn)


check_inputs = _script_quietly(_check_inputs)
check_base_mask = _script_quietly(_check_base_mask)


class ViLDInferenceModule(nn.Module):
    """The inference path of a :class:`ViLDRCNN` (text head only) with the vocabulary as input."""

    def __init__(self, model: ViLDRCNN):
        super().__init__()
        heads = model.roi_heads
        predictor = heads.box_predictor
        self.backbone = model.backbone
        self.proposal_generator = model.proposal_generator
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone(), persistent=False)
        self.size_divisibility: int = int(model.backbone.size_divisibility)
        # the official architecture's image size is the padded input, to which boxes are
        # clipped inclusively (see OfficialViLDRCNN)
        self.official_geometry: bool = isinstance(model, OfficialViLDRCNN)
        self.box_in_features: List[str] = list(heads.box_in_features)
        self.box_pooler = heads.box_pooler
        self.box_head = heads.box_head
        self.classifier = predictor.classifier
        self.embed_dim: int = int(predictor.classifier.embed_dim)
        self.bbox_pred = predictor.bbox_pred
        self.box2box_transform = predictor.box2box_transform
        self.score_thresh: float = float(predictor.test_score_thresh)
        self.nms_thresh: float = float(predictor.test_nms_thresh)
        self.topk_per_image: int = int(predictor.test_topk_per_image)
        self.mask_on: bool = bool(heads.mask_on)
        if self.mask_on:
            self.mask_in_features: List[str] = list(heads.mask_in_features)
            self.mask_pooler = heads.mask_pooler
            self.mask_head = heads.mask_head
        else:
            self.mask_in_features = []
            self.mask_pooler = nn.Identity()
            self.mask_head = nn.Identity()

    def class_scores(
        self,
        pooled: torch.Tensor,
        box_features: torch.Tensor,
        class_embeddings: torch.Tensor,
        base_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """[R, C + 1] class probabilities of the R proposals, background last."""
        return F.softmax(self.classifier(box_features, class_embeddings), dim=-1)

    def detect(
        self, image: torch.Tensor, class_embeddings: torch.Tensor, base_mask: Optional[torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        class_embeddings = check_inputs(image, class_embeddings, self.embed_dim)
        class_embeddings = F.normalize(class_embeddings.to(self.pixel_mean.dtype), dim=1)
        x = (image.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        images = ImageList.from_tensors([x], self.size_divisibility)
        if self.official_geometry:
            images = ImageList(images.tensor, [(images.tensor.shape[-2], images.tensor.shape[-1])])
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        proposal_boxes = proposals[0].proposal_boxes

        box_features = [features[f] for f in self.box_in_features]
        pooled = self.box_pooler(box_features, [proposal_boxes])
        head_out = self.box_head(pooled).flatten(1)
        probs = self.class_scores(pooled, head_out, class_embeddings, base_mask)
        boxes = self.box2box_transform.apply_deltas(self.bbox_pred(head_out), proposal_boxes.tensor)
        if self.official_geometry:
            boxes = clip_boxes_inclusive(boxes, images.image_sizes[0])
        out = self.select(boxes, probs, images.image_sizes[0])
        if self.mask_on:
            mask_features = [features[f] for f in self.mask_in_features]
            mask_logits = self.mask_head.layers(
                self.mask_pooler(mask_features, [Boxes(out["boxes"])])
            )
            out["masks"] = mask_logits[
                :, :1
            ].sigmoid()  # the class-agnostic mask head's one channel
        return out

    def select(
        self, boxes: torch.Tensor, probs: torch.Tensor, image_size: Tuple[int, int]
    ) -> Dict[str, torch.Tensor]:
        """The detections among [R, 4] boxes with [R, C + 1] probabilities, as eager does."""
        if self.official_geometry:
            kept_boxes, scores, classes, _ = official_detections(
                boxes, probs[:, :-1], self.score_thresh, self.nms_thresh, self.topk_per_image
            )
            return {"boxes": kept_boxes, "scores": scores, "classes": classes}
        result, _ = fast_rcnn_inference_single_image(
            boxes, probs, image_size, self.score_thresh, self.nms_thresh, self.topk_per_image
        )
        return {
            "boxes": result.pred_boxes.tensor,
            "scores": result.scores,
            "classes": result.pred_classes,
        }

    def forward(
        self, image: torch.Tensor, class_embeddings: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        return self.detect(image, class_embeddings, None)


class ViLDEnsembleInferenceModule(ViLDInferenceModule):
    """ViLD-ensemble: text and image heads combined with the base mask as an input."""

    def __init__(self, model: ViLDRCNN):
        super().__init__(model)
        self.image_box_head = model.roi_heads.image_head.box_head
        self.image_classifier = model.roi_heads.image_head.classifier
        self.ensemble_lambda: float = float(model.roi_heads.box_predictor.ensemble_lambda)

    def class_scores(
        self,
        pooled: torch.Tensor,
        box_features: torch.Tensor,
        class_embeddings: torch.Tensor,
        base_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        p_text = F.softmax(self.classifier(box_features, class_embeddings), dim=-1)
        p_img = F.softmax(
            self.image_classifier(self.image_box_head(pooled), class_embeddings), dim=-1
        )
        if base_mask is None:
            base_mask = torch.zeros(
                class_embeddings.shape[0], dtype=torch.bool, device=class_embeddings.device
            )
        scores = ensemble_scores(p_text[:, :-1], p_img, base_mask, self.ensemble_lambda)
        return torch.cat([scores, p_text[:, -1:]], dim=1)

    def forward(
        self,
        image: torch.Tensor,
        class_embeddings: torch.Tensor,  # type: ignore[override]
        base_mask: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        base_mask = check_base_mask(base_mask, class_embeddings)
        return self.detect(image, class_embeddings, base_mask)


def inference_module(model: ViLDRCNN) -> ViLDInferenceModule:
    """The exportable inference module of a ViLD model (eval mode, same weights, shared)."""
    if not isinstance(model, ViLDRCNN):
        raise ExportError(
            "only ViLD models (MODEL.META_ARCHITECTURE ViLDRCNN) export with a runtime "
            f"vocabulary; got {type(model).__name__}"
        )
    if model.proposal_generator is None:
        raise ExportError(
            "the model has no proposal generator (precomputed proposals cannot be exported)"
        )
    heads = model.roi_heads
    predictor = getattr(heads.mask_head, "predictor", None) if heads.mask_on else None
    if predictor is not None and getattr(predictor, "out_channels", 1) != 1:
        raise ExportError(
            "the mask head is not class-agnostic (MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK): "
            "its per-class masks cannot follow a runtime vocabulary"
        )
    cls = ViLDEnsembleInferenceModule if heads.image_head is not None else ViLDInferenceModule
    return cls(model).eval()


def export_model(
    model: ViLDRCNN,
    method: str,
    example_image: Optional[torch.Tensor] = None,
    example_vocabulary: Optional[torch.Tensor] = None,
) -> torch.jit.ScriptModule:
    """
    Args:
        model: a ViLD model with its weights.
        method: "scripting" or "tracing".
        example_image: [3, H, W] input for tracing (a real image of the target domain).
        example_vocabulary: [C, D] for tracing (default: the model's test vocabulary).

    Returns:
        the TorchScript module (``torch.jit.save`` it); see the module docstring for its
        inputs and outputs.
    """
    if method not in EXPORT_METHODS:
        raise ExportError(
            f"unknown export method '{method}' (choose from {', '.join(EXPORT_METHODS)})"
        )
    module = inference_module(model)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        module = _freeze_batch_norms(copy.deepcopy(module))  # the model itself is left as it is
    if method == "scripting":
        return scripting_with_instances(module, _INSTANCE_FIELDS)
    if example_image is None:
        raise ExportError("tracing needs an example image")
    vocab = (
        example_vocabulary
        if example_vocabulary is not None
        else model.roi_heads.box_predictor.classifier.test_class_embeddings
    )
    inputs = (example_image, vocab)
    if isinstance(module, ViLDEnsembleInferenceModule):
        inputs = inputs + (torch.zeros(vocab.shape[0], dtype=torch.bool),)
    with torch.no_grad(), warnings.catch_warnings():
        # detectron2's code has Python conditions and asserts on shapes: each is recorded as
        # taken in the example run, which is what tracing means (parity tested on other
        # vocabularies); the warning per condition says nothing more
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module, inputs, strict=False, check_trace=False)


def _freeze_batch_norms(module: nn.Module) -> nn.Module:
    """
    Replace, in place, every BatchNorm / SyncBatchNorm below ``module`` by a
    FrozenBatchNorm with its statistics and affine parameters (what it computes in eval
    mode, for inputs of any rank): SyncBatchNorm cannot be scripted.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen.to(module.running_mean.device)
    for name, child in module.named_children():
        replaced = _freeze_batch_norms(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
