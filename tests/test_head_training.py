"""Head training on cached RoI features: what the cache holds, what training changes, the tool."""

import json
import logging
import os

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from vild_d2.data import DistillDatasetMapper
from vild_d2.engine.cached_roi_features import (
    CacheSource,
    build_roi_feature_cache,
    load_roi_feature_cache,
)
from vild_d2.engine.head_training import head_parameters, load_text_head, train_heads_on_cache

from .conftest import ROOT
from .helpers.scripts import load_script
from .test_distill_mapper import D, _vild_cfg, store, vocab  # noqa: F401  (fixtures)

NO_FLIP = ("INPUT.RANDOM_FLIP", "none")  # one deterministic view of each image


def _cfg(tiny_lvis, store, vocab, tmp_path, *extra):  # noqa: F811
    return _vild_cfg(tiny_lvis, store, vocab, "OUTPUT_DIR", str(tmp_path), *NO_FLIP, *extra)


@pytest.fixture(scope="module")
def cached(tiny_lvis, store, vocab, tmp_path_factory):  # noqa: F811
    """A random ViLD model (weights saved) and the cache of its RoI features."""
    out = tmp_path_factory.mktemp("heads")
    torch.manual_seed(0)
    weights = str(out / "frozen.pth")
    cfg = _cfg(tiny_lvis, store, vocab, out, "MODEL.WEIGHTS", weights)
    model = build_model(cfg)
    torch.save({"model": model.state_dict()}, weights)
    return cfg, model, build_roi_feature_cache(cfg, model)


def test_cache_holds_the_pooled_features_of_its_boxes(cached, tiny_lvis):
    cfg, model, cache = cached
    dicts = DatasetCatalog.get(tiny_lvis["names"]["train"])
    assert cache.num_images == len(dicts) == 3
    per_image = cache.proposal_start.diff()
    assert (per_image == cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE).all()  # 64 sampled each
    assert cache.proposal_features.shape[1:] == (64, 7, 7)
    assert cache.proposal_features.dtype == torch.float16
    regions = cache.region_start.diff()
    assert (regions > 0).all() and (regions <= cfg.MODEL.VILD.NUM_DISTILL_REGIONS).all()
    assert len(cache.teacher) == len(cache.region_features) == len(cache.region_valid)
    # the store's embeddings are unit vectors e_i (region i): each cached one is one of them
    assert torch.equal(cache.teacher.max(dim=1).values, torch.ones(len(cache.teacher)))
    # recompute image 1's pooled features from its cached boxes: the same rows
    mapper = DistillDatasetMapper(cfg, is_train=True)
    image = model.preprocess_image([mapper(dicts[1])])
    with torch.no_grad():
        features = model.backbone(image.tensor)
        feats = [features[f] for f in model.roi_heads.box_in_features]
        rows = cache.proposal_rows(torch.tensor([1]))
        boxes = cache.proposals(rows).proposal_boxes
        again = model.roi_heads.box_pooler(feats, [boxes])
    torch.testing.assert_close(cache.proposal_features[rows].float(), again, atol=2e-3, rtol=2e-3)
    gt = cache.gt_classes[rows]
    assert ((gt >= 0) & (gt <= 48)).all() and (gt < 48).any()  # some foreground, some background


def test_cache_round_trip_and_reuse_rules(cached, tmp_path):
    cfg, _, cache = cached
    path = str(tmp_path / "roi_features.pth")
    cache.save(path)
    source = CacheSource.of(cfg)
    again = load_roi_feature_cache(path, source)
    assert torch.equal(again.proposal_features, cache.proposal_features)
    assert torch.equal(again.teacher, cache.teacher)
    text_only = CacheSource(**dict(vars(source), region_store="", num_regions=0))
    assert load_roi_feature_cache(path, text_only) is not None  # ViLD-text: regions not needed
    other = CacheSource(**dict(vars(source), weights="/elsewhere/model_final.pth"))
    assert load_roi_feature_cache(path, other) is None
    assert load_roi_feature_cache(str(tmp_path / "missing.pth"), source) is None


def test_head_training_fits_the_teacher_and_changes_only_the_heads(cached):
    cfg, model, cache = cached
    trained = set(id(p) for p in head_parameters(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = train_heads_on_cache(
        model, cache, epochs=40, images_per_batch=2, base_lr=0.05, seed=0
    )
    assert len(history) == 40 and {"loss_cls", "loss_box_reg", "loss_image"} <= set(history[0])
    assert history[-1]["loss_image"] < 0.7 * history[0]["loss_image"], history
    for name, p in model.named_parameters():
        if id(p) not in trained:
            assert torch.equal(
                before[name], p.detach()
            ), f"{name} is not a head parameter but changed"
    assert any(
        not torch.equal(before[n], p) for n, p in model.named_parameters() if "box_head" in n
    )
    assert not model.training


def test_ensemble_takes_a_trained_text_head_and_trains_its_image_head_alone(
    cached, tiny_lvis, store, vocab, tmp_path  # noqa: F811
):
    cfg, _, cache = cached
    torch.manual_seed(1)
    text_model = build_model(cfg)  # a "trained ViLD-text": heads of its own
    trained_text = str(tmp_path / "vild_text.pth")
    torch.save({"model": text_model.state_dict()}, trained_text)
    ensemble = build_model(_cfg(tiny_lvis, store, vocab, tmp_path, "MODEL.VILD.ENSEMBLE", "True"))
    image_start = {k: v.clone() for k, v in ensemble.roi_heads.image_head.state_dict().items()}
    load_text_head(ensemble, trained_text)
    heads, text_heads = ensemble.roi_heads, text_model.roi_heads
    # the text head is ViLD-text's; the image head keeps its own start, not a copy of it
    for mine, theirs in (
        (heads.box_head, text_heads.box_head),
        (heads.box_predictor, text_heads.box_predictor),
    ):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    for name, tensor in heads.image_head.state_dict().items():
        assert torch.equal(tensor, image_start[name]), name
    assert not torch.equal(heads.image_head.box_head.fc1.weight, text_heads.box_head.fc1.weight)
    trained = set(id(p) for p in head_parameters(ensemble, text_head=False))
    assert trained == set(id(p) for p in heads.image_head.parameters())
    before = {n: p.detach().clone() for n, p in ensemble.named_parameters()}
    history = train_heads_on_cache(
        ensemble, cache, epochs=20, images_per_batch=2, base_lr=0.05, text_head=False
    )
    assert set(history[0]) == {"loss_image"}
    assert history[-1]["loss_image"] < 0.8 * history[0]["loss_image"], history
    for name, p in ensemble.named_parameters():
        assert torch.equal(before[name], p.detach()) != name.startswith(
            "roi_heads.image_head."
        ), name


def test_a_text_head_of_other_shapes_is_refused_by_name(cached, tmp_path):
    cfg, model, _ = cached
    wrong = str(tmp_path / "narrow.pth")
    state = {
        k: v[..., :3] if k.endswith("fc1.weight") else v for k, v in model.state_dict().items()
    }
    torch.save({"model": state}, wrong)
    ensemble_cfg = cfg.clone()
    ensemble_cfg.merge_from_list(["MODEL.VILD.ENSEMBLE", "True"])
    with pytest.raises(ValueError, match="narrow.pth: no text head of this model's shapes"):
        load_text_head(build_model(ensemble_cfg), wrong)
    with pytest.raises(ValueError, match="for ViLD-ensemble"):
        load_text_head(model, wrong)


def test_distilled_model_needs_regions_in_its_cache(cached):
    _, model, cache = cached
    without = type(cache)(**dict(vars(cache), region_features=cache.region_features[:0]))
    with pytest.raises(ValueError, match="cache holds no distillation regions"):
        train_heads_on_cache(model, without, epochs=1, images_per_batch=2, base_lr=0.01)


def _tool(*args):
    """``tools/train_heads_on_cached_features.py ARGS`` in this process (its datasets are
    registered here): the exit code (0 when it returned)."""
    tool = load_script("tools/train_heads_on_cached_features.py")
    handlers = _all_handlers()
    try:
        tool.invoke_main(list(args))
    except SystemExit as e:
        return e.code
    finally:  # the tool's set-up logs to this test's captured streams: not to later tests'
        for logger, added in _all_handlers().items():
            for handler in added - handlers.get(logger, set()):
                logger.removeHandler(handler)
                handler.close()
    return 0


def _all_handlers():
    """Every logger's handlers: {logger: set of handlers}."""
    loggers = [logging.getLogger()] + [
        v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)
    ]
    return {logger: set(logger.handlers) for logger in loggers}


def test_tool_trains_evaluates_and_reuses_its_cache(
    tiny_lvis, store, vocab, tmp_path  # noqa: F811
):
    torch.manual_seed(0)
    weights = str(tmp_path / "frozen.pth")
    torch.save(
        {"model": build_model(_cfg(tiny_lvis, store, vocab, tmp_path)).state_dict()}, weights
    )
    opts = [
        "MODEL.DEVICE", "cpu", "MODEL.VILD.EMBED_DIM", str(D), "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        vocab, "DATASETS.TRAIN", f"('{tiny_lvis['names']['train']}',)", "DATASETS.TEST",
        f"('{tiny_lvis['names']['val']}',)", "DATASETS.REGION_STORE_TRAIN", store,
        "DATALOADER.NUM_WORKERS", "0", "MODEL.WEIGHTS", weights, *NO_FLIP,
    ]  # fmt: skip
    config = os.path.join(ROOT, "configs", "shapes_world", "vild_R_18_FPN_tiny.yaml")
    cache = tmp_path / "shared_cache.pth"
    written = None
    for key, extra in (("vild", []), ("vild_text", ["MODEL.VILD.IMAGE_LOSS_WEIGHT", "0.0"])):
        out = tmp_path / key
        args = ["--config-file", config, "--epochs", "2", "--images-per-batch", "2"]
        assert _tool(*args, "--cache", str(cache), *opts, *extra, "OUTPUT_DIR", str(out)) == 0
        results = json.loads((out / "eval_results.json").read_text())
        assert {"segm/AP", "segm/APr", "bbox/APr"} <= set(results)  # NaN: a random detector
        history = json.loads((out / "head_training.json").read_text())
        assert len(history) == 2 and ("loss_image" in history[0]) == (key == "vild")
        state = torch.load(str(out / "model_final.pth"))["model"]
        frozen = torch.load(weights)["model"]
        for name in (
            "backbone.bottom_up.stem.conv1.weight",
            "roi_heads.mask_head.predictor.weight",
        ):
            assert torch.equal(state[name], frozen[name])
        assert not torch.equal(
            state["roi_heads.box_head.fc1.weight"], frozen["roi_heads.box_head.fc1.weight"]
        )
        # ViLD-text trains on ViLD's cache: written once
        written = written or cache.stat().st_mtime_ns
        assert cache.stat().st_mtime_ns == written


def test_tool_refuses_a_model_without_vild_heads(tiny_lvis, tmp_path, capsys):
    config = os.path.join(ROOT, "configs", "shapes_world", "mask_rcnn_R_18_FPN_tiny.yaml")
    code = _tool(
        "--config-file", config, "--epochs", "1", "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", f"('{tiny_lvis['names']['train']}',)", "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    assert code == 2
    assert "trains ViLD heads (ViLDRCNN)" in capsys.readouterr().err
