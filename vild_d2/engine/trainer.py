"""The detectron2 trainer of vild_d2 and the config set-up that ``train_net.py`` uses."""

from detectron2.engine import DefaultTrainer, default_setup

from ..config import check_datasets_registered, check_training_inputs, load_config
from ..data.build import build_vild_train_loader
from ..evaluation import build_evaluator


class Trainer(DefaultTrainer):
    """
    DefaultTrainer whose evaluator is chosen from the dataset (LVIS, COCO or open-vocabulary
    COCO) and whose training loader attaches distillation regions from a region store.
    """

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_vild_train_loader(cfg)


def build_config(args):
    """The frozen config of ``args`` (config file + opts); ConfigError on user mistakes."""
    cfg = load_config(args.config_file, args.opts)
    check_datasets_registered(cfg)
    if not getattr(args, "eval_only", False):
        check_training_inputs(cfg)
    cfg.freeze()
    return cfg


def setup(args):
    """build_config + detectron2's default_setup (logging, output dir, seed)."""
    cfg = build_config(args)
    default_setup(cfg, args)
    return cfg
