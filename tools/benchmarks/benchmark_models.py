"""The randomly initialised tiny models the inference benchmarks compare (shared by them)."""

import atexit
import os
import shutil
import tempfile
from typing import List, Tuple

import numpy as np


def tiny_model_opts(
    classes: int, embed_dim: int, size: int, device: str
) -> Tuple[List[str], List[str]]:
    """
    Config overrides of the shapes-world tiny configs for a benchmark: a random [C, D]
    vocabulary file, square test inputs of ``size`` pixels and score threshold 0 (every
    model sends TEST.DETECTIONS_PER_IMAGE boxes to its mask head).

    Returns:
        (overrides for every model, the extra ones of ViLD models).
    """
    tmp = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, tmp, True)  # the benchmark process reads it until it ends
    vocab = os.path.join(tmp, "vocab.npy")
    np.save(vocab, np.random.default_rng(0).normal(size=(classes, embed_dim)).astype(np.float32))
    common = [
        "MODEL.DEVICE",
        device,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        str(classes),
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "INPUT.MIN_SIZE_TEST",
        str(size),
        "INPUT.MAX_SIZE_TEST",
        str(size),
        "DATASETS.TRAIN",
        "()",
        "DATASETS.TEST",
        "()",
    ]
    return common, [
        "MODEL.VILD.EMBED_DIM",
        str(embed_dim),
        "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        vocab,
    ]
