"""Pictures of a model's detections, tiled into one PNG."""

from typing import List

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer
from PIL import Image


def draw_detections(cfg, dataset_name: str, out_path: str, num_images: int = 4,
                    score_threshold: float = 0.3, scale: float = 2.0) -> str:
    """
    Run the model of ``cfg`` (weights ``cfg.MODEL.WEIGHTS``) on the first ``num_images``
    images of ``dataset_name`` and write them side by side with boxes, masks and class
    names of detections scoring at least ``score_threshold``.

    Returns:
        ``out_path``.
    """
    predictor = DefaultPredictor(cfg)  # loads cfg.MODEL.WEIGHTS
    meta = MetadataCatalog.get(dataset_name)
    tiles: List[np.ndarray] = []
    for d in DatasetCatalog.get(dataset_name)[:num_images]:
        bgr = read_image(d["file_name"], format="BGR")
        with torch.no_grad():
            inst = predictor(bgr)["instances"].to("cpu")
        inst = inst[inst.scores >= score_threshold]
        vis = Visualizer(bgr[:, :, ::-1], metadata=meta, scale=scale)
        tiles.append(vis.draw_instance_predictions(inst).get_image())
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0)), constant_values=255) for t in tiles]
    Image.fromarray(np.concatenate(tiles, axis=1)).save(out_path)
    return out_path
