"""ViLD components, registered with detectron2's registries on import."""

from .box_predictor import ROI_BOX_PREDICTOR_REGISTRY, ViLDBoxPredictor
from .image_head import ImageEmbeddingHead
from .losses import distillation_l1_loss, ensemble_scores, image_logits, text_logits
from .meta_arch import ViLDRCNN
from .roi_heads import ViLDROIHeads
from ..vocabulary.embedding_files import (
    VocabularyError,
    check_text_embeddings,
    evaluation_vocabulary,
    load_text_embeddings,
    training_vocabulary,
)
from .zero_shot_classifier import ZeroShotClassifier

from . import official  # noqa: F401, E402  (registers the official ViLD architecture)

__all__ = [
    "ViLDBoxPredictor",
    "ROI_BOX_PREDICTOR_REGISTRY",
    "ImageEmbeddingHead",
    "ViLDRCNN",
    "ViLDROIHeads",
    "text_logits",
    "image_logits",
    "distillation_l1_loss",
    "ensemble_scores",
    "VocabularyError",
    "check_text_embeddings",
    "load_text_embeddings",
    "training_vocabulary",
    "evaluation_vocabulary",
    "ZeroShotClassifier",
]
