"""
The converted oracle against the official TF code's own tensors, stage by stage, for its
three images: each stage is fed the oracle's output of the stage before, so a difference
cannot hide upstream. Tolerances: 1e-4 of the tensor's largest magnitude; detections to
0.01 px, scores to 1e-4, equal classes, masks' IoU >= 0.99.
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.structures import Boxes, ImageList, Instances

from vild_d2.config import load_config
from vild_d2.data.augmentation import build_test_augmentation
from vild_d2.export import export_model
from vild_d2.modeling import VocabularyError
from vild_d2.modeling.official import official_postprocess, official_roi_levels

from .conftest import ORACLE, ORACLE_IMAGES, SHARED, needs_shared

pytestmark = needs_shared

SIZE, PROPOSALS, DETECTIONS = 256, 100, 20  # the oracle's runtime settings (its config.yaml)
YXYX = [1, 0, 3, 2]  # the oracle's boxes are (y1, x1, y2, x2); deltas (dy, dx, dh, dw)


@pytest.fixture(scope="module")
def model(converted_oracle):
    opts = [
        "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
        "MODEL.FPN.SIZE_DIVISIBILITY", str(SIZE), "INPUT.MIN_SIZE_TEST", str(SIZE),
        "INPUT.MAX_SIZE_TEST", str(SIZE), "MODEL.RPN.POST_NMS_TOPK_TEST", str(PROPOSALS),
        "TEST.DETECTIONS_PER_IMAGE", str(DETECTIONS),
    ]  # fmt: skip
    cfg = load_config(os.path.join(converted_oracle, "config.yaml"), opts)
    net = build_model(cfg).eval()
    DetectionCheckpointer(net).load(cfg.MODEL.WEIGHTS)
    vocabulary = torch.from_numpy(np.load(os.path.join(converted_oracle, "class_embeddings.npy")))
    base = torch.from_numpy(np.load(os.path.join(ORACLE, "rare_mask.npy"))[1:] > 0)  # 1 = base
    net.set_vocabulary(vocabulary, base)
    net.test_inputs = (vocabulary, base, cfg)
    return net


@pytest.fixture(scope="module", params=ORACLE_IMAGES)
def oracle(request):
    return dict(np.load(os.path.join(ORACLE, f"outputs_{request.param}.npz")), name=request.param)


def _close(ours, theirs, what, tol=1e-4):
    ours = ours.detach().cpu().numpy() if torch.is_tensor(ours) else np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    err = np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12)
    assert err <= tol, f"{what}: relative error {err:.2e}"


def _nchw(array):
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def _nhwc(tensor):
    return tensor.permute(0, 2, 3, 1)


def _oracle_pyramid(oracle):
    return [_nchw(oracle[f"fpn_p{level}"]) for level in range(2, 7)]


@torch.no_grad()
def test_backbone_and_fpn(model, oracle):
    x = _nchw(oracle["input_image"])
    bottom_up = model.backbone.bottom_up
    _close(
        _nhwc(F.conv2d(x, bottom_up.stem.conv1.weight, None, 2, 3)),
        oracle["stem_conv"],
        "stem conv",
    )
    _close(_nhwc(bottom_up.stem(x)), oracle["stem_maxpool"], "stem")
    features = bottom_up(x)
    for level in range(2, 6):
        _close(_nhwc(features[f"res{level}"]), oracle[f"backbone_c{level}"], f"C{level}")
    pyramid = model.backbone(x)
    for level in range(2, 7):
        _close(_nhwc(pyramid[f"p{level}"]), oracle[f"fpn_p{level}"], f"P{level}")


@torch.no_grad()
def test_rpn_head_anchors_and_proposals(model, oracle):
    pyramid = _oracle_pyramid(oracle)
    rpn = model.proposal_generator
    logits, deltas = rpn.rpn_head(pyramid)
    anchors = rpn.anchor_generator(pyramid)
    for i, level in enumerate(range(2, 7)):
        _close(_nhwc(logits[i]), oracle[f"rpn_scores_l{level}"], f"RPN logits P{level}")
        n, _, h, w = deltas[i].shape
        ours = _nhwc(deltas[i]).reshape(n, h, w, 3, 4)[..., YXYX].reshape(n, h, w, 12)
        _close(ours, oracle[f"rpn_boxes_l{level}"], f"RPN deltas P{level}")
        _close(anchors[i].tensor[:, YXYX], oracle[f"anchors_l{level}"][0], f"anchors P{level}", 0)
    images = ImageList(torch.zeros(1, 3, SIZE, SIZE), [(SIZE, SIZE)])
    features = {f"p{level}": p for level, p in zip(range(2, 7), pyramid)}
    proposals = rpn(images, features)[0][0]
    _close(proposals.proposal_boxes.tensor[:, YXYX], oracle["rpn_rois"][0], "proposals")
    _close(proposals.objectness_logits.sigmoid(), oracle["rpn_roi_scores"][0], "proposal scores")


@torch.no_grad()
def test_roi_pooling(model, oracle):
    pyramid = _oracle_pyramid(oracle)
    for boxes, levels, pooled, pooler in (
        ("rpn_rois", "roi_levels", "roi_features", model.roi_heads.box_pooler),
        ("detection_boxes", "mask_roi_levels", "mask_roi_features", model.roi_heads.mask_pooler),
    ):
        rois = torch.from_numpy(oracle[boxes][0][:, YXYX])
        assert np.array_equal(official_roi_levels(rois, 2, 6).numpy(), oracle[levels][0])
        _close(_nhwc(pooler(pyramid, [Boxes(rois)])), oracle[pooled][0], pooled)


def _run_box_tower(head, pooled):
    x = pooled
    for conv in head.convs:
        x = conv(x)
    return x


@torch.no_grad()
def test_box_heads_embeddings_and_scores(model, oracle):
    heads = model.roi_heads
    pooled = torch.from_numpy(oracle["roi_features"][0]).permute(0, 3, 1, 2)
    for head, prefix in ((heads.box_head, "box_head"), (heads.image_head.box_head, "image_head")):
        _close(_nhwc(_run_box_tower(head, pooled)), oracle[f"{prefix}_conv3"], f"{prefix} conv3")
        x = torch.from_numpy(oracle[f"{prefix}_conv3"]).permute(0, 3, 1, 2).flatten(1)
        for k, (fc, norm) in enumerate(zip(head.fcs, head.fc_norms)):
            x = F.relu(norm(fc(x)))
            _close(x, oracle[f"{prefix}_fc{6 + k}"][0], f"{prefix} fc{6 + k}")
    fc7 = torch.from_numpy(oracle["box_head_fc7"][0])
    image_fc7 = torch.from_numpy(oracle["image_head_fc7"][0])
    text, image = heads.box_predictor.classifier, heads.image_head.classifier
    _close(text.projection(fc7), oracle["text_embed_unnorm"][0], "text embedding (unnormalised)")
    _close(text.embed(fc7), oracle["text_embed"][0], "text embedding")
    _close(
        image.projection(image_fc7),
        oracle["image_embed_unnorm"][0],
        "image embedding (unnormalised)",
    )
    _close(image.embed(image_fc7), oracle["image_embed"][0], "image embedding")
    logits = oracle["class_logits"][0]  # background first there, last here
    _close(text(fc7), np.concatenate([logits[:, 1:], logits[:, :1]], 1), "class logits")
    _close(image(image_fc7), oracle["image_class_logits"][0], "image class logits")
    probs = oracle["text_probs"][0]
    _close(F.softmax(text(fc7), 1), np.concatenate([probs[:, 1:], probs[:, :1]], 1), "text probs")
    _close(F.softmax(image(image_fc7), 1), oracle["image_probs"][0], "image probs")
    predictions = heads.box_predictor(fc7) + (image(image_fc7),)
    rois = [
        Instances(
            (SIZE, SIZE), proposal_boxes=Boxes(torch.from_numpy(oracle["rpn_rois"][0][:, YXYX]))
        )
    ]
    scores = heads.box_predictor.predict_probs(predictions, rois)[0]
    _close(scores[:, :-1], oracle["ensemble_scores"][0], "ensemble scores")
    _close(predictions[1][:, YXYX], oracle["box_deltas"][0], "box deltas")
    boxes = heads.box_predictor.predict_boxes(predictions, rois)[0]
    _close(boxes[:, YXYX], oracle["decoded_boxes"][0][:, 0], "decoded boxes")


@torch.no_grad()
def test_mask_head(model, oracle):
    pooled = torch.from_numpy(oracle["mask_roi_features"][0]).permute(0, 3, 1, 2)
    logits = model.roi_heads.mask_head.layers(pooled)[:, 0]
    _close(logits, oracle["mask_logits"][0], "mask logits")
    _close(logits.sigmoid(), oracle["detection_masks"][0], "mask probabilities")


def _preprocess(model, image):
    """The config's test resize (TF1, float) of an RGB uint8 image -> the model's input."""
    cfg = model.test_inputs[2]
    resized = build_test_augmentation(cfg)[0].get_transform(image).apply_image(image)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))


def _assert_detections(result, oracle, boxes_key="detection_boxes"):
    n = int(oracle["num_detections"][0])
    assert len(result) == n
    assert np.array_equal(result.pred_classes.numpy() + 1, oracle["detection_classes"][0][:n])
    boxes = result.pred_boxes.tensor[:, YXYX].numpy()
    assert np.abs(boxes - oracle[boxes_key][0][:n]).max() <= 0.01
    assert np.abs(result.scores.numpy() - oracle["detection_scores"][0][:n]).max() <= 1e-4


@torch.no_grad()
def test_detections_from_the_network_input(model, oracle):
    image = oracle["image_uint8"]
    x = _preprocess(model, image)
    network_input = (x - model.pixel_mean) / model.pixel_std
    padded = torch.zeros(1, 3, SIZE, SIZE)
    padded[0, :, : x.shape[1], : x.shape[2]] = network_input
    _close(_nhwc(padded), oracle["input_image"], "network input")
    result = model.inference([{"image": x}], do_postprocess=False)[0]
    _assert_detections(result, oracle)
    masks = result.pred_masks[:, 0].numpy() > 0.5
    theirs = oracle["detection_masks"][0] > 0.5
    iou = (masks & theirs).sum((1, 2)) / np.maximum((masks | theirs).sum((1, 2)), 1)
    assert iou.min() >= 0.99
    height, width = image.shape[:2]
    original = official_postprocess(result, tuple(x.shape[1:]), height, width)
    _assert_detections(original, oracle, "detection_boxes_original_image")
    assert original.pred_masks.shape == (len(result), height, width)


def test_reading_the_image_file(oracle):
    """PIL decodes PNG as TensorFlow does; JPEG decoders differ (the test says by how much)."""
    if oracle["name"] == "synthetic":
        assert np.array_equal(
            read_image(os.path.join(ORACLE, "synthetic.png"), "RGB"), oracle["image_uint8"]
        )
        return
    path = os.path.join(SHARED, "coco128", "train2017", oracle["name"][len("coco_") :] + ".jpg")
    ours = read_image(path, "RGB").astype(int)
    diff = np.abs(ours - oracle["image_uint8"].astype(int))
    assert ours.shape == oracle["image_uint8"].shape
    assert 0 < diff.max() <= 17 and diff.mean() < 2.0  # libjpeg versions: a few grey levels


@pytest.mark.parametrize("method", ["scripting", "tracing"])
@torch.no_grad()
def test_export_gives_the_eager_detections(model, method):
    oracle = np.load(os.path.join(ORACLE, f"outputs_{ORACLE_IMAGES[0]}.npz"))
    vocabulary, base, _ = model.test_inputs
    x = _preprocess(model, oracle["image_uint8"])
    eager = model.inference([{"image": x}], do_postprocess=False)[0]
    exported = export_model(model, method, x.float(), vocabulary)
    out = exported(x.float(), vocabulary, base)
    assert torch.equal(out["classes"], eager.pred_classes)
    assert (out["boxes"] - eager.pred_boxes.tensor).abs().max() <= 1e-3
    assert (out["scores"] - eager.scores).abs().max() <= 1e-5
    assert (out["masks"] - eager.pred_masks).abs().max() <= 1e-5
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())  # left as it was


def test_a_vocabulary_of_another_dimension_is_refused(model):
    with pytest.raises(VocabularyError, match="embedding dimension 768 .* D = 512"):
        model.set_vocabulary(torch.randn(5, 768))
