import importlib

import pytest

MODULES = [
    "vild_d2",
    "vild_d2.config",
    "vild_d2.compat.detectron2_patch",
    "vild_d2.compat.numpy_aliases",
    "vild_d2.data.datasets",
    "vild_d2.engine",
    "vild_d2.evaluation",
    "vild_d2.teacher",
    "detectron2.export",
    "detectron2.model_zoo",
    "clip",
    "lvis",
]


@pytest.mark.parametrize("name", MODULES)
def test_import(name):
    importlib.import_module(name)


def test_builtin_datasets_registered():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import vild_d2  # noqa: F401

    for name in ("shapes_world_train", "shapes_world_val"):
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).evaluator_type == "lvis"
