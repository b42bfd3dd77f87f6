"""
The COCO-format ground truth that COCOEvaluator needs for a dataset registered without a
json file, cached under the evaluation's output folder and keyed by its content.

detectron2 caches it as ``<dataset>_coco_format.json`` and reuses that file whatever the
annotations have become since, which gives silently wrong numbers after an annotation
file changes. Here the file name holds a hash of the converted ground truth, so changed
annotations get a new file and unchanged ones reuse theirs.
"""

import hashlib
import json
import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict

from ..utils.atomic_io import atomic_write

__all__ = ["coco_ground_truth_json"]


def coco_ground_truth_json(dataset_name: str, output_dir: str) -> str:
    """
    Set (once per process) and return ``MetadataCatalog.get(dataset_name).json_file``: the
    dataset's COCO-format ground truth in ``output_dir/<dataset>_coco_format.<hash>.json``,
    written atomically if absent. A dataset that already names a json file keeps it.
    """
    meta = MetadataCatalog.get(dataset_name)
    if hasattr(meta, "json_file"):
        return meta.json_file
    text = json.dumps(convert_to_coco_dict(dataset_name), sort_keys=True)
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"{dataset_name}_coco_format.{digest}.json")
    if not os.path.isfile(path):
        atomic_write(path, lambda f: f.write(text), mode="w")
    meta.json_file = path
    return path
