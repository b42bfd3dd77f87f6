"""
Contrastive training of a CLIP model on object crops and captions, and its zero-shot
accuracy: how the offline world's teacher is made (a real CLIP comes pretrained).

Each step takes B labelled boxes, jitters them (as proposals are imprecise), crops each at
1.0x or 1.5x with the region encoder's own crop (:func:`crop_regions`, so training and
precompute see the same pixels), captions every category with a random prompt template
("a photo of a red triangle."), and minimises the symmetric InfoNCE loss between the
crops and the captions, with all crops of a category as positives of its caption.
"""

import logging
import math
import random
import time
from typing import Dict, List, Optional, Sequence

import clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..engine.optimizers import fused_if_supported
from ..engine.precision import autocast
from ..layers import use_block_avg_pools
from ..teacher.region_encoder import crop_batch, encode_regions, scale_boxes
from ..vocabulary.prompts import VILD_TEMPLATES, encode_vocabulary, fill_template

__all__ = [
    "WORLD_TEACHER_SHAPE",
    "WORLD_TEACHER_LR",
    "jitter_boxes",
    "scale_and_clip",
    "AdamWSteps",
    "train_clip_on_crops",
    "symmetric_infonce",
    "zero_shot_accuracy",
]

# A CLIP with a small ModifiedResNet image tower (learns from scratch far faster than a
# ViT on a CPU) and a 2-layer text transformer with a 24-token context.
WORLD_TEACHER_SHAPE = dict(
    embed_dim=64,
    image_resolution=32,
    vision_layers=(1, 1, 1, 1),
    vision_width=48,
    vision_patch_size=None,
    context_length=24,
    transformer_width=128,
    transformer_heads=2,
    transformer_layers=2,
)
# AdamW's peak learning rate for that shape (1500 steps of 96 crops, bfloat16). 2e-3 made
# the teacher's top-1 steadier across memory layouts but missed claim (d) on seed 7
# (docs/runs.md, "The teacher's learning rate and memory layout")
WORLD_TEACHER_LR = 3e-3

logger = logging.getLogger(__name__)


def jitter_boxes(
    boxes: torch.Tensor,
    gen: torch.Generator,
    shift: float = 0.15,
    scale: Sequence[float] = (0.8, 1.25),
) -> torch.Tensor:
    """
    Args:
        boxes: [n, 4] XYXY pixels.
        shift: centre moved by up to this fraction of the box's width/height.
        scale: width and height multiplied by factors drawn from this range (log-uniform).

    Returns:
        [n, 4] XYXY (not clipped).
    """
    n = len(boxes)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + (torch.rand(n, generator=gen) * 2 - 1) * shift * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + (torch.rand(n, generator=gen) * 2 - 1) * shift * h
    lo, hi = math.log(scale[0]), math.log(scale[1])
    w = w * torch.exp(lo + torch.rand(n, generator=gen) * (hi - lo))
    h = h * torch.exp(lo + torch.rand(n, generator=gen) * (hi - lo))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def scale_and_clip(
    boxes: torch.Tensor, scales: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Each box enlarged by its own factor about its centre (as :func:`scale_boxes`), clipped."""
    out = scale_boxes(boxes, scales, (height, width))
    out[:, 2] = torch.maximum(out[:, 2], (out[:, 0] + 1).clamp(max=width))
    out[:, 3] = torch.maximum(out[:, 3], (out[:, 1] + 1).clamp(max=height))
    out[:, 0] = torch.minimum(out[:, 0], out[:, 2] - 1)
    out[:, 1] = torch.minimum(out[:, 1], out[:, 3] - 1)
    return out


def _padded(boxes: List[torch.Tensor]) -> torch.Tensor:
    """Per-image [n_i, 4] boxes as one [N, max n_i, 4] tensor, padded with empty boxes."""
    out = torch.zeros(len(boxes), max([len(b) for b in boxes] + [1]), 4)
    for i, b in enumerate(boxes):
        out[i, : len(b)] = b.float().reshape(-1, 4)
    return out


def background_boxes(
    boxes: List[torch.Tensor],
    owners: torch.Tensor,
    sides: Sequence[float],
    height: int,
    width: int,
    gen: torch.Generator,
    max_iou: float = 0.3,
    tries: int = 20,
    padded: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """
    Boxes of object size that hold no object: CLIP has seen countless crops that are none of
    a vocabulary's categories; a teacher trained on object crops only has not, and embeds a
    patch of background as confidently as an object (measured in docs/teacher.md).

    Args:
        boxes: per image [n_i, 4] XYXY pixels of all its objects.
        owners: [k] the image of each box to draw.
        sides: (smallest, largest) box side, pixels (log-uniform).
        max_iou: a drawn box overlaps every object of its image by less than this.
        tries: draws per box; a box that never fits keeps its last draw.
        padded: ``boxes`` as :func:`_padded` gives them (pass it when calling repeatedly).

    Returns:
        [k, 4] XYXY pixels inside the image.
    """
    objects = _padded(boxes) if padded is None else padded
    k = len(owners)
    out = torch.zeros(k, 4)
    todo = torch.arange(k)
    lo, hi = math.log(sides[0]), math.log(sides[1])
    for _ in range(tries):
        n = len(todo)
        wh = torch.exp(lo + torch.rand(n, 2, generator=gen) * (hi - lo))
        wh = torch.minimum(wh, torch.tensor([float(width), float(height)]))
        x0 = torch.rand(n, generator=gen) * (width - wh[:, 0])
        y0 = torch.rand(n, generator=gen) * (height - wh[:, 1])
        out[todo] = drawn = torch.stack([x0, y0, x0 + wh[:, 0], y0 + wh[:, 1]], dim=1)
        others = objects[owners[todo]]  # [n, m, 4]
        inter_wh = (
            torch.minimum(drawn[:, None, 2:], others[..., 2:])
            - torch.maximum(drawn[:, None, :2], others[..., :2])
        ).clamp(min=0)
        inter = inter_wh.prod(-1)
        areas = (others[..., 2:] - others[..., :2]).clamp(min=0).prod(-1)
        iou = inter / (wh.prod(-1)[:, None] + areas - inter)
        todo = todo[iou.max(dim=1).values >= max_iou]
        if len(todo) == 0:
            break
    return out


class AdamWSteps:
    """
    AdamW (fused where torch supports it: on a CPU ~10x faster steps) over ``steps`` steps
    with a cosine schedule and a 5% linear warm-up, and the training curve: the mean loss
    and training top-1 of every ``every`` steps (and of the last ones) with the seconds
    since the start, shown on ``bar``.
    """

    def __init__(self, params, steps: int, lr: float, weight_decay: float, bar, every: int = 50):
        self.opt = fused_if_supported(torch.optim.AdamW, params, lr=lr, weight_decay=weight_decay)
        warmup = max(1, steps // 20)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda s: min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, steps) / steps)),
        )
        self.steps, self.bar, self.every = steps, bar, every
        self.history: List[Dict[str, float]] = []
        self._loss = self._acc = 0.0
        self._start = time.perf_counter()

    def take(self, step: int, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor):
        """One optimiser step on ``loss`` (step ``step``, 0-based), recorded with the top-1."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self._loss += float(loss.detach())
        self._acc += float((logits.argmax(1) == targets).float().mean())
        if (step + 1) % self.every == 0 or step + 1 == self.steps:
            k = (step % self.every) + 1
            self.history.append(
                {
                    "step": step + 1,
                    "loss": self._loss / k,
                    "train_acc": self._acc / k,
                    "seconds": time.perf_counter() - self._start,
                }
            )
            self.bar.set_postfix(loss=f"{self._loss / k:.3f}", acc=f"{self._acc / k:.2f}")
            self._loss = self._acc = 0.0


class _CropSampler:
    """
    Each step's crops: ``batch_size`` jittered, rescaled object boxes drawn uniformly from
    every labelled box, then (``background_fraction``) boxes of no object, target C.
    """

    def __init__(
        self, images, boxes, labels, num_classes, batch_size, background_fraction, scales, seed
    ):
        if len({tuple(im.shape) for im in images}) != 1:
            raise ValueError("train_clip_on_crops needs images of one size (they are stacked)")
        self.stacked = torch.stack(images)
        self.height, self.width = self.stacked.shape[-2:]
        self.owners = torch.cat(
            [torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(boxes)]
        )
        self.boxes = torch.cat([b.float().reshape(-1, 4) for b in boxes])
        self.labels = torch.cat(labels)
        if len(self.owners) == 0:
            raise ValueError("no labelled boxes to train on")
        self.per_image, self.padded = boxes, _padded(boxes)
        self.num_classes, self.scales = num_classes, torch.tensor(scales)
        self.num_background = int(round(batch_size * background_fraction))
        self.num_objects = batch_size - self.num_background
        sides = self.boxes[:, 2:] - self.boxes[:, :2]
        self.sides = (float(sides.min().clamp(min=4)), float(sides.max()))
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self, size: int):
        """(crops [B, 3, size, size] uint8, targets [B] int64)."""
        gen, n = self.gen, self.num_objects
        chosen = torch.randint(len(self.owners), (n,), generator=gen)
        b = jitter_boxes(self.boxes[chosen], gen)
        s = self.scales[torch.randint(len(self.scales), (n,), generator=gen)]
        b = scale_and_clip(b, s, self.height, self.width)
        owners, targets = self.owners[chosen], self.labels[chosen]
        if self.num_background:
            empty = torch.randint(len(self.stacked), (self.num_background,), generator=gen)
            found = background_boxes(
                self.per_image, empty, self.sides, self.height, self.width, gen, padded=self.padded
            )
            b, owners = torch.cat([b, found]), torch.cat([owners, empty])
            targets = torch.cat([targets, torch.full((self.num_background,), self.num_classes)])
        used, index = owners.unique(return_inverse=True)
        return crop_batch(self.stacked[used], b, index, size), targets


def symmetric_infonce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    CLIP's symmetric InfoNCE on crops x captions, ``logits`` [B, C], ``targets`` [B]: the
    crop-to-caption cross-entropy and the caption-to-crops one with every crop of a
    category a positive of its caption, averaged.
    """
    loss_i2t = F.cross_entropy(logits, targets)
    present = targets.unique()
    positives = targets[None, :] == present[:, None]  # [P, B]
    t2i = logits.t()[present]  # [P, B]
    loss_t2i = (
        torch.logsumexp(t2i, dim=1) - torch.logsumexp(t2i.masked_fill(~positives, -1e4), dim=1)
    ).mean()
    return (loss_i2t + loss_t2i) / 2


def train_clip_on_crops(
    model,
    images: List[torch.Tensor],
    boxes: List[torch.Tensor],
    labels: List[torch.Tensor],
    class_names: Sequence[str],
    *,
    steps: int = 600,
    batch_size: int = 96,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    templates: Sequence[str] = tuple(VILD_TEMPLATES),
    scales: Sequence[float] = (1.0, 1.5),
    background_fraction: float = 0.0,
    background_name: str = "background",
    seed: int = 0,
    progress: bool = True,
    dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> List[Dict[str, float]]:
    """
    Train ``model`` in place (float32 weights, on its device; ``dtype``: autocast's;
    ``channels_last``: the image tower's weights and crops in NHWC memory while it trains,
    contiguous again after).

    Args:
        images: per image a [3, H, W] uint8 RGB tensor.
        boxes: per image [n_i, 4] XYXY pixels of its labelled objects.
        labels: per image [n_i] int64 category indices into ``class_names``.
        steps, batch_size, lr, weight_decay: AdamW with a cosine schedule and 5% warm-up.
        templates: caption templates, one drawn per category and step.
        scales: each crop takes one of these box enlargements at random.
        background_fraction: this share of each batch are crops of no object
            (:func:`background_boxes`), captioned with ``background_name`` in the templates.

    Returns:
        per 50 steps: step, loss, crop-to-caption training accuracy.
    """
    device = next(model.parameters()).device
    sampler = _CropSampler(
        images, boxes, labels, len(class_names), batch_size, background_fraction, scales, seed
    )
    pick = random.Random(seed)  # caption templates
    captioned = [*class_names, background_name] if sampler.num_background else list(class_names)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    use_block_avg_pools(model)  # the same numbers as nn.AvgPool2d, faster on a CPU
    model.train().to(memory_format=layout)
    bar = tqdm(range(steps), desc="teacher", unit="step", disable=not progress)
    training = AdamWSteps(model.parameters(), steps, lr, weight_decay, bar)
    for step in bar:
        crops, targets = sampler.sample(model.visual.input_resolution)
        crops, targets = crops.to(device, memory_format=layout), targets.to(device)
        prompts = [
            fill_template(pick.choice(list(templates)), n.replace("_", " ")) for n in captioned
        ]
        tokens = clip.tokenize(prompts, context_length=model.context_length, truncate=True)
        with autocast(device, dtype):
            img = F.normalize(model.encode_image(crops), dim=-1)
            txt = F.normalize(model.encode_text(tokens.to(device)), dim=-1)
        img, txt = img.float(), txt.float()  # the similarities in float32 (up to 100 x cos)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()  # [B, C]
        training.take(step, symmetric_infonce(logits, targets), logits, targets)
    model.eval().to(memory_format=torch.contiguous_format)  # saved as any CLIP checkpoint
    return training.history


@torch.no_grad()
def zero_shot_accuracy(
    model,
    images: List[torch.Tensor],
    boxes: List[torch.Tensor],
    labels: List[torch.Tensor],
    class_names: Sequence[str],
    *,
    templates: Sequence[str] = tuple(VILD_TEMPLATES),
    scales: Sequence[float] = (1.0, 1.5),
    novel_ids: Sequence[int] = (),
    groups: Optional[Dict[str, Sequence[int]]] = None,
) -> Dict[str, float]:
    """
    Classify every box by its region embedding (:func:`encode_regions`, the precompute's
    own path) against the prompt-ensembled class embeddings.

    Args:
        groups: optional name -> class indices (e.g. the novel kinds); adds
            ``accuracy_<name>`` for the boxes of each.

    Returns:
        accuracy over all boxes, and over the boxes of ``novel_ids`` and of the others (%),
        with their counts.
    """
    text = encode_vocabulary(model, class_names, templates)
    predicted, truth = [], []
    for image, b, y in zip(images, boxes, labels):
        if len(b):
            emb = encode_regions(model, image, b, scales)
            predicted.append((emb @ text.t()).argmax(1))
            truth.append(y)
    predicted, truth = torch.cat(predicted), torch.cat(truth)
    novel = torch.isin(truth, torch.as_tensor(list(novel_ids), dtype=truth.dtype))
    correct = (predicted == truth).float()

    def pct(mask):
        return float(100 * correct[mask].mean()) if mask.any() else float("nan")

    out = {
        "accuracy": pct(torch.ones_like(novel)),
        "accuracy_novel": pct(novel),
        "accuracy_base": pct(~novel),
        "boxes": int(len(truth)),
        "novel_boxes": int(novel.sum()),
    }
    for name, ids in (groups or {}).items():
        out[f"accuracy_{name}"] = pct(
            torch.isin(truth, torch.as_tensor(list(ids), dtype=truth.dtype))
        )
    return out
