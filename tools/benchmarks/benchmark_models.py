"""The randomly initialised models the inference benchmarks compare, and their timing loop."""

import atexit
import os
import shutil
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np
import torch


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


def random_images(num: int, size: int) -> List[torch.Tensor]:
    """``num`` random [3, size, size] float images (the same ones in every run)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 255, (3, size, size), generator=g).float() for _ in range(num)]


def time_inference(
    models: Dict[str, torch.nn.Module], images: List[torch.Tensor], device: str, check=None
) -> Dict[str, List[float]]:
    """
    Seconds per image of each eval-mode model, after one warm-up image each; the models
    take turns on every image, so that a drift of the machine hits them alike.
    ``check(name, outputs)`` is called on each output.
    """
    times = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model([{"image": images[0]}])
        for img in images:
            for name, model in models.items():
                t0 = time.perf_counter()
                out = model([{"image": img}])
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
                if check is not None:
                    check(name, out)
    return times
