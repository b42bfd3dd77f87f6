"""
The cosine classifier of ViLD, one module for both heads: projection to the teacher's D,
L2 normalisation, cosine to a vocabulary of text embeddings (and, for the text head, a
learnable background embedding), divided by the temperature.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..vocabulary.embedding_files import (
    check_text_embeddings,
    evaluation_vocabulary,
    training_vocabulary,
)
from .losses import image_logits, text_logits
from .versioned import VersionedModule

__all__ = ["ZeroShotClassifier"]


class ZeroShotClassifier(VersionedModule, nn.Module):
    """
    ``x [R, input_size] -> e_r = normalize(Linear(x)) [R, D] -> logits``:

    * with a background (the text head): ``[cos(e_r, t_1..t_C), cos(e_r, e_bg)] / tau``,
      [R, C + 1], background last (detectron2's convention); in training, classes outside
      the training base mask get -inf (ViLD trains on base categories only);
    * without (the image head of ViLD-ensemble): ``cos(e_r, t_c) / tau``, [R, C].

    The vocabulary is data, not weights: two non-persistent buffers, the training one
    (used in training mode) and the test one (eval mode), which
    :meth:`set_test_vocabulary` swaps at any time. :meth:`forward` also takes a vocabulary
    as an argument, which is what an exported model does (TorchScript-compatible).

    Systematic expansion (the paper's attribute x noun vocabularies): with test
    ``attribute_embeddings`` [A, D] beside N noun embeddings, the test classes are the
    N * A pairs (class ``n * A + a`` = attribute a, noun n) scored
    ``p(noun | r) * p(attribute | r)``, each a softmax of its own (the background competes
    with the nouns only). The logits returned are log-probabilities, so the softmax
    downstream gives back exactly those products and the background probability.
    """

    @configurable
    def __init__(
        self,
        input_size: int,
        *,
        train_class_embeddings: torch.Tensor,
        test_class_embeddings: torch.Tensor,
        train_base_mask: Optional[torch.Tensor] = None,
        test_base_mask: Optional[torch.Tensor] = None,
        temperature: float = 0.01,
        use_background: bool = True,
        novel_logit: float = float("-inf"),
    ):
        """
        Args:
            input_size: features per region (the box head's output, flattened).
            train_class_embeddings: [C_train, D] unit-norm text embeddings.
            test_class_embeddings: [C_test, D] text embeddings (normalised here).
            train_base_mask: [C_train] bool (default all True).
            test_base_mask: [C_test] bool (default all False: every class novel).
            temperature: tau (0.01 in ViLD).
            use_background: a learnable background embedding and column (the text head).
            novel_logit: the training logit of classes outside the training base mask
                (-inf: out of the softmax; 0: the official code's; see ``text_logits``).
        """
        super().__init__()
        num_classes, embed_dim = train_class_embeddings.shape
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.use_background = use_background
        self.novel_logit = novel_logit
        self.projection = nn.Linear(input_size, embed_dim)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.constant_(self.projection.bias, 0)
        if use_background:
            self.bg_embedding = nn.Parameter(F.normalize(torch.randn(embed_dim), dim=0))
        else:  # the image head: no background, an empty tensor keeps one scriptable type
            self.register_buffer("bg_embedding", torch.zeros(0), persistent=False)
        self.register_buffer("train_class_embeddings", train_class_embeddings, persistent=False)
        self.register_buffer(
            "train_base_mask", _mask_or_all(train_base_mask, num_classes), persistent=False
        )
        self.register_buffer("test_class_embeddings", torch.empty(0, embed_dim), persistent=False)
        self.register_buffer("test_base_mask", torch.empty(0, dtype=torch.bool), persistent=False)
        self.register_buffer(
            "test_attribute_embeddings", torch.empty(0, embed_dim), persistent=False
        )
        self.set_test_vocabulary(test_class_embeddings, test_base_mask)

    @classmethod
    def from_config(cls, cfg, input_size: int, use_background: bool = True):
        train_vocab = training_vocabulary(cfg)
        train, train_mask = train_vocab.embeddings, train_vocab.base_mask
        novel = cfg.MODEL.VILD.TRAIN_NOVEL_LOGITS
        if novel not in _NOVEL_LOGITS:
            raise ValueError(
                f"MODEL.VILD.TRAIN_NOVEL_LOGITS is '{novel}': choose {' or '.join(_NOVEL_LOGITS)}"
            )
        test_vocab = evaluation_vocabulary(cfg, 0)
        test, test_mask = test_vocab.embeddings, test_vocab.base_mask
        return {
            "input_size": input_size,
            "train_class_embeddings": train,
            "test_class_embeddings": test,
            "train_base_mask": train_mask,
            "test_base_mask": test_mask,
            "temperature": cfg.MODEL.VILD.TEMPERATURE,
            "use_background": use_background,
            "novel_logit": _NOVEL_LOGITS[novel],
        }

    @torch.jit.unused
    def set_test_vocabulary(
        self,
        class_embeddings: torch.Tensor,
        base_mask: Optional[torch.Tensor] = None,
        attribute_embeddings: Optional[torch.Tensor] = None,
    ) -> None:
        """
        Use ``class_embeddings`` ([C, D], any norm; normalised here) in eval mode.
        ``base_mask`` ([C] bool, or [C * A] with attributes): which classes were base in
        training (ViLD-ensemble weighs them differently); default: every class novel.
        ``attribute_embeddings`` ([A, D]): score the C * A (noun, attribute) pairs instead.
        """
        emb = check_text_embeddings(
            class_embeddings, name="test vocabulary", embed_dim=self.embed_dim
        )
        attrs = torch.empty(0, self.embed_dim)
        if attribute_embeddings is not None:
            attrs = check_text_embeddings(
                attribute_embeddings, name="attribute vocabulary", embed_dim=self.embed_dim
            )
        num_classes = emb.shape[0] * (attrs.shape[0] or 1)
        if base_mask is None:
            base_mask = torch.zeros(num_classes, dtype=torch.bool)
        if base_mask.shape != (num_classes,):
            raise ValueError(
                f"test vocabulary: base_mask of shape {tuple(base_mask.shape)} for"
                f" {num_classes} classes"
            )
        device = self.projection.weight.device
        self.test_class_embeddings = emb.to(device)
        self.test_attribute_embeddings = attrs.to(device)
        self.test_base_mask = base_mask.to(device=device, dtype=torch.bool)

    @property
    @torch.jit.unused
    def class_embeddings(self) -> torch.Tensor:
        """The vocabulary of the current mode: [C, D]."""
        return self.train_class_embeddings if self.training else self.test_class_embeddings

    @property
    @torch.jit.unused
    def base_mask(self) -> torch.Tensor:
        """Which classes of the current mode's vocabulary are base: [C] bool."""
        return self.train_base_mask if self.training else self.test_base_mask

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Region features [R, ...] -> unit-norm region embeddings e_r [R, D] (float32)."""
        if not torch.jit.is_scripting() and _autocasting(x):
            return self._in_float32(self.embed, x)
        return F.normalize(self.projection(x.flatten(1)), dim=1)

    @torch.jit.unused
    def _in_float32(self, method, x: torch.Tensor, *args):
        """``method(x.float(), *args)`` with autocast off: under mixed precision the
        classifier stays float32 (its logits are cosines / tau; vild_d2/engine/precision.py)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return method(x.float(), *args)

    def logits(
        self,
        region_embeddings: torch.Tensor,
        class_embeddings: torch.Tensor,
        base_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Unit-norm e_r [R, D] against unit-norm ``class_embeddings`` [C, D]: [R, C + 1]
        with a background (``base_mask`` [C] bool: False classes get -inf), else [R, C].
        """
        if self.use_background:
            return text_logits(
                region_embeddings,
                class_embeddings,
                self.bg_embedding,
                self.temperature,
                base_mask,
                self.novel_logit,
            )
        return image_logits(region_embeddings, class_embeddings, self.temperature)

    def factored_logits(
        self,
        region_embeddings: torch.Tensor,
        noun_embeddings: torch.Tensor,
        attribute_embeddings: torch.Tensor,
    ) -> torch.Tensor:
        """
        log p(noun | r) + log p(attribute | r) for every pair: [R, N * A] (+ the background's
        log-probability as a last column with a background); pair ``n * A + a``.
        """
        nouns = F.log_softmax(self.logits(region_embeddings, noun_embeddings), dim=1)
        attributes = F.log_softmax(
            image_logits(region_embeddings, attribute_embeddings, self.temperature), dim=1
        )
        num_nouns = noun_embeddings.shape[0]
        pairs = (nouns[:, :num_nouns, None] + attributes[:, None, :]).flatten(1)
        if self.use_background:
            return torch.cat([pairs, nouns[:, num_nouns:]], dim=1)
        return pairs

    def forward(
        self, x: torch.Tensor, class_embeddings: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Args:
            x: [R, ...] region features.
            class_embeddings: [C, D] unit-norm vocabulary; default: the current mode's
                buffer (training: the base-masked training vocabulary).

        Returns:
            logits [R, C + 1] (with a background) or [R, C], float32.
        """
        if not torch.jit.is_scripting() and _autocasting(x):
            return self._in_float32(self.forward, x, class_embeddings)
        e = self.embed(x)
        if class_embeddings is not None:
            return self.logits(e, class_embeddings)
        if self.training:
            return self.logits(e, self.train_class_embeddings, self.train_base_mask)
        if self.test_attribute_embeddings.shape[0] > 0:
            return self.factored_logits(
                e, self.test_class_embeddings, self.test_attribute_embeddings
            )
        return self.logits(e, self.test_class_embeddings)


# MODEL.VILD.TRAIN_NOVEL_LOGITS -> the logit of a novel class in the training softmax
_NOVEL_LOGITS = {"exclude": float("-inf"), "zero": 0.0}


@torch.jit.unused
def _autocasting(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device (then the classifier leaves it)."""
    return torch.is_autocast_enabled(x.device.type)


def _mask_or_all(mask: Optional[torch.Tensor], n: int) -> torch.Tensor:
    if mask is None:
        return torch.ones(n, dtype=torch.bool)
    if mask.shape != (n,):
        raise ValueError(f"base mask of shape {tuple(mask.shape)} for {n} classes")
    return mask.to(torch.bool)
