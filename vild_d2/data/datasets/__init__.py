from .builtin import datasets_root, register_all_builtin, shapes_world_root
from .coco_ov import COCO_OV_BASE, COCO_OV_NOVEL, load_coco_ov_json, register_coco_ov
from .lvis_format import (
    load_image_list,
    load_lvis_format_json,
    lvis_format_metadata,
    register_lvis_format,
    remove_annotations_of,
)
from .lvis_v1_ov import load_lvis_v1_train_ov, lvis_v1_ov_metadata

register_all_builtin()
