"""The detectron2 trainer of vild_d2 and the config set-up that ``train_net.py`` uses."""

import contextlib
from collections import OrderedDict

import detectron2.engine.defaults as d2_defaults
import torch
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint.files import check_resume, check_weights
from ..config import check_device, load_config
from ..data.build import build_vild_train_loader, check_datasets_registered, check_training_inputs
from ..data.distill_mapper import DistillDatasetMapper
from ..evaluation import build_evaluator
from ..modeling import ViLDRCNN, evaluation_vocabulary
from ..utils.logs import quiet_logger
from ..vocabulary.embedding_files import check_test_vocabularies, check_training_vocabulary
from .optimizers import build_optimizer
from .precision import AutocastTrainer, autocast_dtype

# what train_net.py --eval-only writes into OUTPUT_DIR: {"task/metric": value}
EVAL_RESULTS_FILE = "eval_results.json"


class Trainer(DefaultTrainer):
    """
    DefaultTrainer whose evaluator is chosen from the dataset (LVIS, COCO or open-vocabulary
    COCO), whose training loader attaches distillation regions from a region store, and
    which also trains in several CPU processes (gloo; ``train_net.py --num-gpus N`` with
    ``MODEL.DEVICE cpu``).
    """

    def __init__(self, cfg):
        dtype = autocast_dtype(cfg)
        bfloat16 = dtype == torch.bfloat16  # else detectron2's: fp32, or AMPTrainer's fp16
        if bfloat16:  # AMPTrainer would scale losses with CUDA's GradScaler
            cfg = _with_amp(cfg, False)
        with (
            _ddp_on_cpu()
            if cfg.MODEL.DEVICE == "cpu" and comm.get_world_size() > 1
            else contextlib.nullcontext()
        ):
            super().__init__(cfg)
        if bfloat16:
            self._trainer = AutocastTrainer.from_trainer(self._trainer, cfg.MODEL.DEVICE, dtype)
            self.cfg = _with_amp(self.cfg, True)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """detectron2's SGD, fused where torch supports it (vild_d2/engine/optimizers.py)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_vild_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader with vild_d2's test resize (INPUT.TF1_RESIZE_TEST)."""
        mapper = DistillDatasetMapper(cfg, is_train=False)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    def build_hooks(self):
        """DefaultTrainer's hooks; the periodic checkpointer keeps SOLVER.CHECKPOINTS_KEPT files."""
        built = super().build_hooks()
        if self.cfg.SOLVER.CHECKPOINTS_KEPT > 0:
            for hook in built:
                if isinstance(hook, hooks.PeriodicCheckpointer):
                    hook.max_to_keep = self.cfg.SOLVER.CHECKPOINTS_KEPT
                    hook.recent_checkpoints = []
        return built

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        DefaultTrainer.test, one dataset at a time: before ``DATASETS.TEST[i]`` is
        evaluated, a ViLD model gets that dataset's vocabulary (``DATASETS.
        TEXT_EMBEDDINGS_TEST[i]``, see :func:`vild_d2.modeling.evaluation_vocabulary`), so
        each dataset is scored with its own classes. Same return value as DefaultTrainer.
        """
        names = list(cfg.DATASETS.TEST)
        if evaluators is not None and len(evaluators) != len(names):
            raise ValueError(f"{len(evaluators)} evaluators for {len(names)} test datasets")
        vild = model.module if isinstance(model, DistributedDataParallel) else model
        if not isinstance(vild, ViLDRCNN) or len(names) < 1:
            return super().test(cfg, model, evaluators)
        results = OrderedDict()
        for index, name in enumerate(names):
            vocab = evaluation_vocabulary(cfg, index)
            vild.set_vocabulary(vocab.embeddings, vocab.base_mask)
            one = cfg.clone()
            one.defrost()
            one.DATASETS.TEST = (name,)
            if cfg.DATASETS.PROPOSAL_FILES_TEST:
                one.DATASETS.PROPOSAL_FILES_TEST = (cfg.DATASETS.PROPOSAL_FILES_TEST[index],)
            one.DATASETS.TEXT_EMBEDDINGS_TEST = ()
            results[name] = super().test(
                one, model, None if evaluators is None else [evaluators[index]]
            )
        return results[names[0]] if len(names) == 1 else results


def _with_amp(cfg, enabled: bool):
    """A frozen copy of ``cfg`` with SOLVER.AMP.ENABLED set to ``enabled``."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.AMP.ENABLED = enabled
    cfg.freeze()
    return cfg


@contextlib.contextmanager
def _ddp_on_cpu():
    """
    detectron2's DefaultTrainer wraps the model in DistributedDataParallel with
    ``device_ids=[local rank]``, which only a CUDA model accepts; a CPU model needs
    ``device_ids=None``. Only while a Trainer is built.
    """
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


def build_config(args):
    """The frozen config of ``args`` (config file + opts); ConfigError on user mistakes."""
    cfg = load_config(args.config_file, args.opts)
    check_datasets_registered(cfg)
    check_weights(cfg)
    if getattr(args, "resume", False):
        check_resume(cfg.OUTPUT_DIR)
    if not getattr(args, "eval_only", False):
        check_training_inputs(cfg)
    check_training_vocabulary(cfg)
    check_test_vocabularies(cfg)
    check_device(cfg)  # last: the data's mistakes are worth more to hear first
    autocast_dtype(cfg)  # ConfigError for an unknown SOLVER.AMP.DTYPE
    cfg.freeze()
    return cfg


def setup(args):
    """build_config + detectron2's default_setup (logging, output dir, seed), and vild_d2's
    own loggers to the same console and log file, as detectron2 projects do."""
    cfg = build_config(args)
    # detectron2's environment report imports torch.utils.cpp_extension, which warns "No
    # CUDA runtime is found" on a machine with a CUDA toolkit folder but no GPU: not news
    with quiet_logger("torch.utils.cpp_extension"):
        default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="vild_d2")
    return cfg
