"""
vild_d2's config keys (all added here, each with a one-line comment) and config loading
with one-line errors for the usual mistakes.
"""

import os
import re
from typing import Sequence

import torch
import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .errors import VildD2Error

__all__ = [
    "add_vild_config",
    "load_config",
    "ConfigError",
]


class ConfigError(VildD2Error, ValueError):
    """A user mistake in a config file, a command-line override or a dataset name."""


def add_vild_config(cfg: CN) -> None:
    """Add vild_d2's keys, with their defaults, to a detectron2 config."""
    _C = cfg
    _C.MODEL.VILD = CN()
    # D: dimension of the teacher's embeddings (512 for CLIP ViT-B/32).
    _C.MODEL.VILD.EMBED_DIM = 512
    # tau: cosine similarities are divided by it before the softmax.
    _C.MODEL.VILD.TEMPERATURE = 0.01
    # [C_train, D] text embeddings (.npy/.pt) of the training set's categories, in its order.
    _C.MODEL.VILD.TRAIN_TEXT_EMBEDDINGS = ""
    # [C_test, D] text embeddings used at inference; "" = the training ones.
    _C.MODEL.VILD.TEST_TEXT_EMBEDDINGS = ""
    # w: weight of the L1 distillation loss; 0 gives ViLD-text (no regions needed).
    _C.MODEL.VILD.IMAGE_LOSS_WEIGHT = 0.5
    # M: at most this many precomputed distillation regions per image.
    _C.MODEL.VILD.NUM_DISTILL_REGIONS = 300
    # ViLD-ensemble: a separate image head, trained by the distillation loss only.
    _C.MODEL.VILD.ENSEMBLE = False
    # lambda of ViLD-ensemble: base p_text^l * p_img^(1-l), novel p_text^(1-l) * p_img^l.
    _C.MODEL.VILD.ENSEMBLE_LAMBDA = 2.0 / 3.0
    # Novel classes in the training softmax: "exclude" (logit -inf) or "zero" (logit 0, as
    # the official code, which multiplies the logits by a 0/1 mask: each adds exp(0)).
    _C.MODEL.VILD.TRAIN_NOVEL_LOGITS = "exclude"

    # ViLDRCNN keeps its conv weights (and so its feature maps) in channels-last (NHWC)
    # memory, which oneDNN convolves faster on CPU; the numbers are the same up to rounding.
    _C.MODEL.CHANNELS_LAST = False

    # Folder of the region-embedding store with DATASETS.TRAIN's distillation regions;
    # "" = none (needed when MODEL.VILD.IMAGE_LOSS_WEIGHT > 0). See vild_d2/data/region_store.
    _C.DATASETS.REGION_STORE_TRAIN = ""
    # One [C_i, D] text-embedding file per DATASETS.TEST entry (like PROPOSAL_FILES_TEST), so
    # each test dataset is scored with its own vocabulary; () = MODEL.VILD.TEST_TEXT_EMBEDDINGS.
    _C.DATASETS.TEXT_EMBEDDINGS_TEST = ()
    # A distillation region is kept after crop if at least this fraction of its area is visible.
    _C.INPUT.DISTILL_MIN_VISIBLE = 0.5

    # Periodic checkpoints (SOLVER.CHECKPOINT_PERIOD) kept on disk, older ones deleted
    # (model_final is always kept); 0 keeps all, as detectron2 does.
    _C.SOLVER.CHECKPOINTS_KEPT = 0
    # The dtype of mixed-precision training (SOLVER.AMP.ENABLED, detectron2's switch): "" =
    # the device's, float16 with loss scaling on CUDA (detectron2's AMPTrainer), bfloat16 on
    # a CPU; or "bfloat16" (no loss scaling) on either (vild_d2/engine/precision.py).
    _C.SOLVER.AMP.DTYPE = ""

    # The box predictor of ViLD's ROI heads, a name in ROI_BOX_PREDICTOR_REGISTRY
    # (vild_d2/modeling/box_predictor.py); "" = the heads' own (ViLDBoxPredictor, or
    # OfficialViLDBoxPredictor for OfficialViLDROIHeads).
    _C.MODEL.ROI_BOX_HEAD.PREDICTOR_NAME = ""
    _add_official_architecture_keys(_C)
    _add_large_scale_jitter_keys(_C)


def _add_official_architecture_keys(_C: CN) -> None:
    # The official ViLD architecture (vild_d2/modeling/official, configs/LVIS-OV-official):
    # norm after each conv of OfficialRPNHead, one per FPN level ("" = none).
    _C.MODEL.RPN.NORM = ""
    # OfficialFPN pads inputs to a multiple of this (officially 1024); 0 = its coarsest stride.
    _C.MODEL.FPN.SIZE_DIVISIBILITY = 0
    # Resize test images with TensorFlow 1's bilinear resize (the official ViLD's), in float,
    # sizes rounded half to even, instead of detectron2's PIL resize (same MIN/MAX_SIZE_TEST).
    _C.INPUT.TF1_RESIZE_TEST = False


def _add_large_scale_jitter_keys(_C: CN) -> None:
    _C.INPUT.LSJ = CN()
    # Large-scale jitter (resize by a random scale, then crop/pad to a fixed square).
    _C.INPUT.LSJ.ENABLED = False
    # Side of the square training image, pixels.
    _C.INPUT.LSJ.IMAGE_SIZE = 1024
    # Range of the random scale factor relative to IMAGE_SIZE.
    _C.INPUT.LSJ.MIN_SCALE = 0.1
    _C.INPUT.LSJ.MAX_SCALE = 2.0


def load_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """
    detectron2 defaults + vild_d2 keys, then ``config_file``, then ``opts``
    ("KEY VALUE" pairs). Raises ConfigError naming the file or key at fault.
    """
    cfg = get_cfg()
    add_vild_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"{config_file}: {_key_error_text(e)}") from None
        except yaml.YAMLError as e:  # a file that is not YAML, or broken YAML
            where = getattr(e, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"{config_file}: not readable YAML{line}: {problem}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{config_file}: cannot be read ({e})") from None
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, ValueError, AssertionError) as e:  # yacs asserts on unknown keys
            raise ConfigError(f"command-line override: {_key_error_text(e)}") from None
    return cfg


def check_device(cfg: CN) -> None:
    """ConfigError if ``MODEL.DEVICE`` names CUDA on a machine where torch has none."""
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE}, but torch finds no CUDA GPU on this machine:"
            " add MODEL.DEVICE cpu to the command"
        )


def _key_error_text(e: Exception) -> str:
    text = str(e.args[0]) if e.args else str(e)
    m = re.match(r"Non-existent (?:config )?key: (\S+)", text)  # yacs' two wordings
    return f"unknown config key {m.group(1)}" if m else text
