"""The detectron2 trainer of vild_d2 and the config set-up that ``train_net.py`` uses."""

from detectron2.engine import DefaultTrainer, default_setup

from ..config import check_datasets_registered, load_config
from ..evaluation import build_evaluator


class Trainer(DefaultTrainer):
    """DefaultTrainer whose evaluator is chosen from the dataset (LVIS or COCO format)."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)


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
