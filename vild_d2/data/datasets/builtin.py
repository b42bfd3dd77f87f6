"""
Register vild_d2's builtin datasets, rooted like detectron2's at
``$DETECTRON2_DATASETS`` (default ``./datasets``). Nothing is read at registration: a
dataset whose files are missing fails with a clear error only when it is used.

    shapes_world_{train,val}   shapes_world/annotations/{train,val}.json, shapes_world/{train,val}/
    shapes_world_train_ov      shapes_world_train without the rare (= novel) annotations
    shapes_world_transfer      shapes_world/annotations/transfer.json: another vocabulary (24)
    lvis_v1_train_ov           lvis/lvis_v1_train.json (rare annotations removed), coco/
    lvis_v1_val                detectron2's registration + open-vocabulary metadata
    coco_2017_train_ov         coco/annotations/instances_train2017.json, coco/train2017/ (48 base)
    coco_2017_val_ov           coco/annotations/instances_val2017.json, coco/val2017/ (48 + 17)
"""

import os

from detectron2.data import DatasetCatalog

from .coco_ov import register_coco_ov
from .lvis_format import register_lvis_format
from .lvis_v1_ov import register_lvis_v1_ov


def datasets_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def shapes_world_root() -> str:
    return os.path.join(datasets_root(), "shapes_world")


def register_all_builtin() -> None:
    registered = set(DatasetCatalog.list())
    root = shapes_world_root()
    # (name, split json, remove the novel = rare annotations)
    for name, split, base_only in (
        ("shapes_world_train", "train", False),
        ("shapes_world_train_ov", "train", True),
        ("shapes_world_val", "val", False),
        ("shapes_world_transfer", "transfer", False),
    ):
        if name not in registered:
            register_lvis_format(
                name,
                os.path.join(root, "annotations", f"{split}.json"),
                root,
                novel_frequencies=("r",),
                remove_novel_annotations=base_only,
            )

    root = datasets_root()
    if "lvis_v1_train_ov" not in registered:
        register_lvis_v1_ov(
            "lvis_v1_train_ov",
            "lvis_v1_val",
            {
                split: os.path.join(root, "lvis", f"lvis_v1_{split}.json")
                for split in ("train", "val")
            },
            os.path.join(root, "coco"),
        )
    for split, train in (("train", True), ("val", False)):
        name = f"coco_2017_{split}_ov"
        if name not in registered:
            register_coco_ov(
                name,
                os.path.join(root, "coco", "annotations", f"instances_{split}2017.json"),
                os.path.join(root, "coco", f"{split}2017"),
                train=train,
            )
