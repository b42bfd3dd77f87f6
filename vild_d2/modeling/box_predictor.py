"""
ViLD's box predictor: region embeddings scored against a text-embedding vocabulary.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Instances
from torch import nn

from ..data.vocabulary import dataset_vocabulary
from .losses import ensemble_scores, image_logits, text_logits
from .text_embeddings import check_text_embeddings, load_text_embeddings

__all__ = ["ViLDBoxPredictor"]


class ViLDBoxPredictor(FastRCNNOutputLayers):
    """
    e_r = normalize(Linear(box_head_feature)); logits = [cos(e_r, t_c)..., cos(e_r, e_bg)]/tau
    against a fixed text-embedding matrix (a buffer, never optimised, not saved in
    checkpoints: the vocabulary is data) and a learnable background embedding; one
    class-agnostic box regression.

    Two vocabularies are held: the training one (the training dataset's categories; its
    ``train_base_mask`` removes novel categories from the softmax) used in training mode,
    and the test one used in eval mode, which :meth:`set_test_vocabulary` swaps at any
    time. ``test_base_mask`` only matters for ViLD-ensemble scoring.

    ``forward`` returns ``(logits [R, C+1], deltas [R, 4])``; for ViLD-ensemble the ROI
    heads append the image head's region embeddings [R, D] as a third element before
    calling :meth:`inference`.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        train_class_embeddings: torch.Tensor,
        test_class_embeddings: torch.Tensor,
        train_base_mask: Optional[torch.Tensor] = None,
        test_base_mask: Optional[torch.Tensor] = None,
        temperature: float = 0.01,
        ensemble_lambda: float = 2.0 / 3.0,
        **kwargs,
    ):
        """
        Args:
            input_shape: shape of the box head's output.
            train_class_embeddings: [C_train, D] unit-norm text embeddings.
            test_class_embeddings: [C_test, D] unit-norm text embeddings.
            train_base_mask: [C_train] bool (default all True).
            test_base_mask: [C_test] bool (default all False: every class novel).
            temperature: tau.
            ensemble_lambda: lambda of ViLD-ensemble scoring.
            kwargs: the arguments of FastRCNNOutputLayers other than ``num_classes`` and
                ``cls_agnostic_bbox_reg`` (always True here).
        """
        num_classes, embed_dim = train_class_embeddings.shape
        super().__init__(input_shape, num_classes=num_classes, cls_agnostic_bbox_reg=True, **kwargs)
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        del self.cls_score
        self.embed_dim = embed_dim
        self.projection = nn.Linear(input_size, embed_dim)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.constant_(self.projection.bias, 0)
        self.bg_embedding = nn.Parameter(F.normalize(torch.randn(embed_dim), dim=0))
        self.temperature = temperature
        self.ensemble_lambda = ensemble_lambda
        self.register_buffer("train_class_embeddings", train_class_embeddings, persistent=False)
        self.register_buffer("train_base_mask", _mask_or_all(train_base_mask, num_classes), persistent=False)
        # Fixed after construction, so the novel-annotation check costs nothing without novel.
        self._train_has_novel = not bool(self.train_base_mask.all())
        self.register_buffer("test_class_embeddings", torch.empty(0, embed_dim), persistent=False)
        self.register_buffer("test_base_mask", torch.empty(0, dtype=torch.bool), persistent=False)
        self.set_test_vocabulary(test_class_embeddings, test_base_mask)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        for key in ("num_classes", "cls_agnostic_bbox_reg"):
            del ret[key]
        d = cfg.MODEL.VILD.EMBED_DIM
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        train_vocab = dataset_vocabulary(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None
        if train_vocab is not None and train_vocab["num_classes"] != num_classes:
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes} but dataset "
                f"'{train_vocab['dataset']}' has {train_vocab['num_classes']} categories"
            )
        train = load_text_embeddings(
            cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS, embed_dim=d,
            config_key="MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
            num_rows=num_classes, rows_of="MODEL.ROI_HEADS.NUM_CLASSES",
        )
        test_vocab = dataset_vocabulary(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else None
        test = load_text_embeddings(
            cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS or cfg.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS,
            embed_dim=d, config_key="MODEL.VILD.TEST_TEXT_EMBEDDINGS",
            num_rows=test_vocab["num_classes"] if test_vocab else None,
            rows_of=f"dataset '{test_vocab['dataset']}'" if test_vocab else "",
        )
        ret.update(
            train_class_embeddings=train,
            test_class_embeddings=test,
            train_base_mask=train_vocab["base_mask"] if train_vocab else None,
            test_base_mask=test_vocab["base_mask"] if test_vocab else None,
            temperature=cfg.MODEL.VILD.TEMPERATURE,
            ensemble_lambda=cfg.MODEL.VILD.ENSEMBLE_LAMBDA,
        )
        return ret

    # ------------------------------------------------------------------ vocabulary
    def set_test_vocabulary(
        self, class_embeddings: torch.Tensor, base_mask: Optional[torch.Tensor] = None
    ) -> None:
        """
        Use ``class_embeddings`` ([C, D], any norm; normalised here) as the vocabulary in
        eval mode. ``base_mask`` ([C] bool) says which classes were base in training
        (ViLD-ensemble weighs them differently); default: all classes novel.
        """
        emb = check_text_embeddings(class_embeddings, name="test vocabulary", embed_dim=self.embed_dim)
        if base_mask is None:
            base_mask = torch.zeros(emb.shape[0], dtype=torch.bool)
        if base_mask.shape != (emb.shape[0],):
            raise ValueError(
                f"test vocabulary: base_mask of shape {tuple(base_mask.shape)} for "
                f"{emb.shape[0]} classes"
            )
        device = self.projection.weight.device
        self.test_class_embeddings = emb.to(device)
        self.test_base_mask = base_mask.to(device=device, dtype=torch.bool)

    @property
    def class_embeddings(self) -> torch.Tensor:
        """The vocabulary of the current mode: [C, D]."""
        return self.train_class_embeddings if self.training else self.test_class_embeddings

    @property
    def base_mask(self) -> torch.Tensor:
        """Which classes of the current mode's vocabulary are base: [C] bool."""
        return self.train_base_mask if self.training else self.test_base_mask

    # ---------------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Box-head features [R, ...] -> unit-norm region embeddings [R, D]."""
        return F.normalize(self.projection(x.flatten(1)), dim=1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: [R, ...] box-head features.

        Returns:
            logits [R, C+1] (training: novel classes at -inf) and deltas [R, 4].
        """
        x = x.flatten(1)
        mask = self.train_base_mask if self.training else None
        logits = text_logits(self.embed(x), self.class_embeddings, self.bg_embedding,
                             self.temperature, mask)
        return logits, self.bbox_pred(x)

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """L_text (cross-entropy over base classes + background) and class-agnostic box loss."""
        if len(proposals) and self._train_has_novel:
            gt = torch.cat([p.gt_classes for p in proposals])
            fg = gt[gt < self.num_classes]
            novel = fg[~self.train_base_mask[fg]]
            if novel.numel():
                raise ValueError(
                    f"training proposals matched to novel classes {sorted(set(novel.tolist()))[:10]}: "
                    "novel annotations must be removed from the training set"
                )
        return super().losses(predictions[:2], proposals)

    # -------------------------------------------------------------------- inference
    def predict_boxes(self, predictions, proposals: List[Instances]):
        return super().predict_boxes(predictions[:2], proposals)

    def predict_probs(self, predictions, proposals: List[Instances]):
        """
        ViLD: softmax over [test classes, background]. ViLD-ensemble (a third element in
        ``predictions``: image-head embeddings [R, D]): the geometric-mean scores, with
        the text head's background probability kept in the last column.
        """
        logits = predictions[0]
        probs = F.softmax(logits, dim=-1)
        if len(predictions) > 2:
            p_img = F.softmax(image_logits(predictions[2], self.class_embeddings, self.temperature), dim=-1)
            scores = ensemble_scores(probs[:, :-1], p_img, self.base_mask, self.ensemble_lambda)
            probs = torch.cat([scores, probs[:, -1:]], dim=1)
        return probs.split([len(p) for p in proposals], dim=0)


def _mask_or_all(mask: Optional[torch.Tensor], n: int) -> torch.Tensor:
    if mask is None:
        return torch.ones(n, dtype=torch.bool)
    if mask.shape != (n,):
        raise ValueError(f"base mask of shape {tuple(mask.shape)} for {n} classes")
    return mask.to(torch.bool)

