"""The official ViLD's image geometry around :class:`ViLDRCNN`."""

from typing import Dict, List

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ..meta_arch import ViLDRCNN
from .postprocessing import official_postprocess

__all__ = ["OfficialViLDRCNN"]


@META_ARCH_REGISTRY.register()
class OfficialViLDRCNN(ViLDRCNN):
    """
    ViLDRCNN as the official release sees an image: every input is padded with zeros
    to the backbone's size divisibility (1024 x 1024 in the LVIS configs) and that padded
    size is the image size of the proposal generator and the heads (the official
    ``image_info`` "desired size", to which boxes are clipped). Detections come back in
    the original image the official way (:func:`official_postprocess`).
    """

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        images = super().preprocess_image(batched_inputs)
        padded = (int(images.tensor.shape[-2]), int(images.tensor.shape[-1]))
        return ImageList(images.tensor, [padded] * len(images))

    def inference(self, batched_inputs, detected_instances=None, do_postprocess: bool = True):
        results = super().inference(batched_inputs, detected_instances, do_postprocess=False)
        if not do_postprocess:
            return results
        out = []
        for result, x in zip(results, batched_inputs):
            size = tuple(x["image"].shape[-2:])
            height, width = x.get("height", size[0]), x.get("width", size[1])
            out.append({"instances": official_postprocess(result, size, height, width)})
        return out
