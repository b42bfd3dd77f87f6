"""Mixed precision (SOLVER.AMP): the dtype chosen, train_net's trainer and head training in
bfloat16 on a CPU, with float32 weights and a float32 classifier."""

import copy

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from vild_d2.config import ConfigError, load_config
from vild_d2.engine import Trainer
from vild_d2.engine.head_training import train_heads_on_cache
from vild_d2.engine.precision import AutocastTrainer, autocast, autocast_dtype

from .conftest import TINY_CONFIG
from .test_distill_mapper import store, vocab  # noqa: F401  (fixtures)
from .test_head_training import cached  # noqa: F401  (fixture)
from .test_train_eval import _tiny_cfg
from .test_vild_model import vocab_file  # noqa: F401  (fixture)
from .test_vild_model import ENSEMBLE_CONFIG, VILD_CONFIG
from .test_vild_model import _cfg as _vild_cfg
from .test_vild_model import _inputs


def _amp(cfg, *opts):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(["SOLVER.AMP.ENABLED", "True", *opts])
    return cfg


def test_the_dtype_follows_the_device_and_refuses_what_cannot_train():
    cfg = load_config(TINY_CONFIG, ["MODEL.DEVICE", "cpu"])
    assert autocast_dtype(cfg) is None  # off unless asked
    assert autocast_dtype(_amp(cfg)) is torch.bfloat16
    assert autocast_dtype(_amp(cfg, "SOLVER.AMP.DTYPE", "bfloat16")) is torch.bfloat16
    with pytest.raises(ConfigError, match="float16 on a CPU"):
        autocast_dtype(_amp(cfg, "SOLVER.AMP.DTYPE", "float16"))
    with pytest.raises(ConfigError, match="SOLVER.AMP.DTYPE is 'int8'"):
        autocast_dtype(_amp(cfg, "SOLVER.AMP.DTYPE", "int8"))
    cuda = load_config(TINY_CONFIG, ["MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True"])
    assert autocast_dtype(cuda) is torch.float16  # detectron2's AMP, as its users expect


def test_train_net_trains_in_bfloat16_on_a_cpu(tiny_lvis, tmp_path):
    cfg = _amp(_tiny_cfg(tiny_lvis, tmp_path), "SOLVER.MAX_ITER", "2")
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, AutocastTrainer) and trainer.cfg.SOLVER.AMP.ENABLED
    seen = {}
    first_conv = trainer.model.backbone.bottom_up.stem.conv1
    # the first call is training's (the evaluation after it runs in float32)
    first_conv.register_forward_hook(lambda m, i, o: seen.setdefault("conv", o.dtype) and None)
    trainer.train()
    assert seen["conv"] == torch.bfloat16  # the convolutions ran in bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)


def test_head_training_in_bfloat16_keeps_float32_weights_and_classifier(cached):  # noqa: F811
    cfg, model, cache = cached
    state = copy.deepcopy(model.state_dict())
    histories = {}
    for dtype in (None, torch.bfloat16):
        model.load_state_dict(state)
        logits = {}
        classifier = model.roi_heads.box_predictor.classifier
        hook = classifier.register_forward_hook(lambda m, i, o: logits.update(t=o.dtype))
        histories[dtype] = train_heads_on_cache(
            model, cache, epochs=3, images_per_batch=2, base_lr=0.05, seed=0, dtype=dtype
        )
        hook.remove()
        assert logits["t"] == torch.float32  # cosines / tau stay float32 under autocast
        assert all(p.dtype == torch.float32 for p in model.parameters())
    fp32, bf16 = histories[None][-1], histories[torch.bfloat16][-1]
    assert fp32 != bf16  # autocast changed the arithmetic ...
    for key in fp32:  # ... and not what is learned
        assert abs(bf16[key] - fp32[key]) <= 0.1 * abs(fp32[key]) + 0.02, (key, fp32, bf16)
    model.load_state_dict(state)


@pytest.mark.parametrize("config", [VILD_CONFIG, ENSEMBLE_CONFIG])
def test_vild_with_float16_region_embeddings_trains_under_bfloat16_autocast(
    config, vocab_file  # noqa: F811
):
    model = build_model(_vild_cfg(config, vocab_file)).train()
    batch = _inputs()  # distillation regions with the stores' float16 teacher embeddings
    with EventStorage(), autocast("cpu", torch.bfloat16):
        losses = model(batch)
    assert "loss_image" in losses and all(torch.isfinite(v) for v in losses.values())
    sum(v.float() for v in losses.values()).backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def _convs_seen(module) -> list:
    """The output dtypes of ``module``'s convolutions, as they run (a forward hook each)."""
    seen = []
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    return seen


def test_the_world_teacher_and_the_pretraining_train_in_bfloat16():
    from vild_d2.teacher import build_clip
    from vild_d2.world.imagenet import RoIClassifier, pretrain_roi_classifier
    from vild_d2.world.teacher_training import WORLD_TEACHER_SHAPE, train_clip_on_crops

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 255, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in "ab"]
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([[20.0, 10.0, 60.0, 50.0]])]
    labels = [torch.tensor([0]), torch.tensor([1])]
    teacher = build_clip(seed=0, **WORLD_TEACHER_SHAPE)
    seen = _convs_seen(teacher.visual)
    history = train_clip_on_crops(
        teacher, images, boxes, labels, ["a", "b"], steps=2, batch_size=4, progress=False,
        dtype=torch.bfloat16,
    )  # fmt: skip
    assert seen and set(seen) == {torch.bfloat16} and history
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    cfg = load_config(TINY_CONFIG, ["MODEL.DEVICE", "cpu"])
    classifier = RoIClassifier(cfg, 2)
    seen = _convs_seen(classifier.backbone)
    history = pretrain_roi_classifier(
        classifier, images, boxes, labels, steps=2, batch_size=4, crop_size=32,
        progress=False, dtype=torch.bfloat16,
    )  # fmt: skip
    assert seen and set(seen) == {torch.bfloat16} and history
    assert all(p.dtype == torch.float32 for p in classifier.parameters())
