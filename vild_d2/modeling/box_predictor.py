"""ViLD's box predictor: region embeddings scored against a text-embedding vocabulary."""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Instances
from detectron2.utils.registry import Registry

from .losses import ensemble_scores
from .versioned import VersionedModule
from .zero_shot_classifier import ZeroShotClassifier

__all__ = ["ViLDBoxPredictor", "ROI_BOX_PREDICTOR_REGISTRY"]

ROI_BOX_PREDICTOR_REGISTRY = Registry("ROI_BOX_PREDICTOR")
ROI_BOX_PREDICTOR_REGISTRY.__doc__ = """
Box predictors of ViLD's ROI heads (``MODEL.ROI_BOX_HEAD.PREDICTOR_NAME``): each a
:class:`ViLDBoxPredictor` built as ``cls(cfg, box_head_output_shape)``.
"""


@ROI_BOX_PREDICTOR_REGISTRY.register()
class ViLDBoxPredictor(VersionedModule, FastRCNNOutputLayers):
    """
    detectron2's FastRCNNOutputLayers with its ``cls_score`` replaced by a
    :class:`ZeroShotClassifier` (``classifier``: projection, cosine to the text embeddings
    and a learnable background, / tau) and one class-agnostic box regression.

    The classifier holds two vocabularies: the training one (the training dataset's
    categories; its base mask removes novel categories from the softmax) used in training
    mode, and the test one used in eval mode, which :meth:`set_test_vocabulary` swaps at
    any time. The test base mask only matters for ViLD-ensemble scoring.

    ``forward`` returns ``(logits [R, C+1], deltas [R, 4])``; for ViLD-ensemble the ROI
    heads append the image head's logits [R, C] as a third element before calling
    :meth:`inference`.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        classifier: ZeroShotClassifier,
        ensemble_lambda: float = 2.0 / 3.0,
        **kwargs,
    ):
        """
        Args:
            input_shape: shape of the box head's output.
            classifier: the text head's classifier (with a background).
            ensemble_lambda: lambda of ViLD-ensemble scoring.
            kwargs: the arguments of FastRCNNOutputLayers other than ``num_classes`` and
                ``cls_agnostic_bbox_reg`` (always True here).
        """
        num_classes = classifier.train_class_embeddings.shape[0]
        super().__init__(input_shape, num_classes=num_classes, cls_agnostic_bbox_reg=True, **kwargs)
        del self.cls_score  # replaced by the classifier
        self.classifier = classifier
        self.embed_dim = classifier.embed_dim
        self.ensemble_lambda = ensemble_lambda
        # Fixed after construction, so the novel-annotation check costs nothing without novel.
        self._train_has_novel = not bool(classifier.train_base_mask.all())

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        for key in ("num_classes", "cls_agnostic_bbox_reg"):
            del ret[key]
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        ret["classifier"] = ZeroShotClassifier(cfg, input_size, use_background=True)
        ret["ensemble_lambda"] = cfg.MODEL.VILD.ENSEMBLE_LAMBDA
        return ret

    # ------------------------------------------------------------------ vocabulary
    def set_test_vocabulary(
        self, class_embeddings: torch.Tensor, base_mask: Optional[torch.Tensor] = None
    ) -> None:
        """See :meth:`ZeroShotClassifier.set_test_vocabulary`."""
        self.classifier.set_test_vocabulary(class_embeddings, base_mask)

    @property
    def train_class_embeddings(self) -> torch.Tensor:
        return self.classifier.train_class_embeddings

    @property
    def train_base_mask(self) -> torch.Tensor:
        return self.classifier.train_base_mask

    @property
    def class_embeddings(self) -> torch.Tensor:
        """The vocabulary of the current mode: [C, D]."""
        return self.classifier.class_embeddings

    @property
    def base_mask(self) -> torch.Tensor:
        """Which classes of the current mode's vocabulary are base: [C] bool."""
        return self.classifier.base_mask

    # ---------------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Box-head features [R, ...] -> unit-norm region embeddings [R, D]."""
        return self.classifier.embed(x)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: [R, ...] box-head features.

        Returns:
            logits [R, C+1] (training: novel classes at -inf) and deltas [R, 4].
        """
        x = x.flatten(1)
        return self.classifier(x), self.bbox_pred(x)

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """L_text (cross-entropy over base classes + background) and class-agnostic box loss."""
        if len(proposals) and self._train_has_novel:
            gt = torch.cat([p.gt_classes for p in proposals])
            fg = gt[gt < self.num_classes]
            novel = fg[~self.train_base_mask[fg]]
            if novel.numel():
                raise ValueError(
                    "training proposals matched to novel classes"
                    f" {sorted(set(novel.tolist()))[:10]}: novel annotations must be removed from"
                    " the training set"
                )
        return super().losses(predictions[:2], proposals)

    # -------------------------------------------------------------------- inference
    def predict_boxes(self, predictions, proposals: List[Instances]):
        return super().predict_boxes(predictions[:2], proposals)

    def predict_probs(self, predictions, proposals: List[Instances]):
        """
        ViLD: softmax over [test classes, background]. ViLD-ensemble (a third element in
        ``predictions``: the image head's logits [R, C]): the geometric-mean scores, with
        the text head's background probability kept in the last column.
        """
        probs = F.softmax(predictions[0], dim=-1)
        if len(predictions) > 2:
            scores = ensemble_scores(
                probs[:, :-1],
                F.softmax(predictions[2], dim=-1),
                self.base_mask,
                self.ensemble_lambda,
            )
            probs = torch.cat([scores, probs[:, -1:]], dim=1)
        return probs.split([len(p) for p in proposals], dim=0)
