"""The detectron2 trainer of vild_d2 and the config set-up that ``train_net.py`` uses."""

from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup

from ..config import check_datasets_registered, load_config
from ..data.augmentation import build_train_augmentation
from ..evaluation import build_evaluator


class Trainer(DefaultTrainer):
    """DefaultTrainer whose evaluator is chosen from the dataset (LVIS or COCO format)."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        args = DatasetMapper.from_config(cfg, is_train=True)
        args["augmentations"] = build_train_augmentation(cfg)
        if cfg.INPUT.LSJ.ENABLED:
            args["recompute_boxes"] = cfg.MODEL.MASK_ON  # boxes from the cropped masks
        return build_detection_train_loader(cfg, mapper=DatasetMapper(**args))


def build_config(args):
    """The frozen config of ``args`` (config file + opts); ConfigError on user mistakes."""
    cfg = load_config(args.config_file, args.opts)
    check_datasets_registered(cfg)
    cfg.freeze()
    return cfg


def setup(args):
    """build_config + detectron2's default_setup (logging, output dir, seed)."""
    cfg = build_config(args)
    default_setup(cfg, args)
    return cfg
