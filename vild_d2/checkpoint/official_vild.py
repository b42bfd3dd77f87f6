"""
The variables of an official ViLD checkpoint (tensorflow/tpu ``projects/vild``) mapped
to the state dict of vild_d2's official-architecture model (``configs/LVIS-OV-official``).

The architecture is read from the variables, never from a file name: the ResNet depth
from the ``resnet<depth>/`` scope, every width from a kernel's shape, ViLD-ensemble from
the presence of the image branch (``distill_fc6``). Every variable is either mapped or
skipped as optimiser state; anything else fails the conversion, named.

Layout facts (checked against the official graph): kernels are HWIO (convs), [in, out]
(dense) and [kh, kw, out, in] (the mask head's transposed conv); fc6 reads its 7x7xC input
in H, W, C order; box deltas are (dy, dx, dh, dw); the classifier's ``class-predict``
kernel [D, C] holds the text embeddings (a vocabulary file here, not a weight).
"""

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import VildD2Error

__all__ = [
    "ConversionError",
    "OfficialArchitecture",
    "infer_architecture",
    "convert_variables",
    "is_optimizer_state",
    "ema_shadows",
    "variable_sources",
]

# optimiser slots and counters a training checkpoint may hold beside the weights
_OPTIMIZER_STATE = re.compile(
    r"(^global_step$|^beta[12]_power(_\d+)?$|"
    r"/(Momentum|ExponentialMovingAverage|Adam|Adam_1|RMSProp|RMSProp_1|Adagrad|Ftrl|Ftrl_1)$)"
)
_BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}
_HEAD = "frcnn_layer_0/fast_rcnn_head/"
_BN_FIELDS = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)
_DELTA_ORDER = [1, 0, 3, 2]  # official (dy, dx, dh, dw) -> detectron2 (dx, dy, dw, dh)


class ConversionError(VildD2Error, ValueError):
    """A checkpoint that is not (or not entirely) an official ViLD model; names what is wrong."""


def is_optimizer_state(name: str) -> bool:
    """True for ``global_step`` and optimiser slots (``.../Momentum`` ...): not weights."""
    return bool(_OPTIMIZER_STATE.search(name))


@dataclass
class OfficialArchitecture:
    """What a checkpoint's variables say of its model (all widths in channels)."""

    depth: int
    ensemble: bool
    stem_channels: int
    res2_channels: int
    bottleneck_channels: int
    fpn_channels: int
    rpn_conv_dims: List[int]
    num_anchors: int
    box_conv_dims: List[int]
    box_fc_dims: List[int]
    pooler_resolution: int
    mask_conv_dims: List[int]
    num_classes: int
    embed_dim: int

    @property
    def name(self) -> str:
        return f"{'vild_ensemble' if self.ensemble else 'vild'}_R_{self.depth}_FPN"

    def config_overrides(self) -> List[str]:
        """``KEY VALUE`` pairs that make a configs/LVIS-OV-official config this model."""
        pairs = {
            "MODEL.RESNETS.DEPTH": self.depth,
            "MODEL.RESNETS.STEM_OUT_CHANNELS": self.stem_channels,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": self.res2_channels,
            "MODEL.RESNETS.WIDTH_PER_GROUP": self.bottleneck_channels,
            "MODEL.FPN.OUT_CHANNELS": self.fpn_channels,
            "MODEL.RPN.CONV_DIMS": self.rpn_conv_dims,
            "MODEL.ROI_BOX_HEAD.NUM_CONV": len(self.box_conv_dims),
            "MODEL.ROI_BOX_HEAD.CONV_DIM": (self.box_conv_dims or [0])[0],
            "MODEL.ROI_BOX_HEAD.NUM_FC": len(self.box_fc_dims),
            "MODEL.ROI_BOX_HEAD.FC_DIM": self.box_fc_dims[0],
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": self.pooler_resolution,
            "MODEL.ROI_MASK_HEAD.NUM_CONV": len(self.mask_conv_dims),
            "MODEL.ROI_MASK_HEAD.CONV_DIM": (self.mask_conv_dims or [0])[0],
            "MODEL.ROI_HEADS.NUM_CLASSES": self.num_classes,
            "MODEL.VILD.EMBED_DIM": self.embed_dim,
            "MODEL.VILD.ENSEMBLE": self.ensemble,
        }
        return [str(x) for kv in pairs.items() for x in kv]


def _require(shapes: Dict[str, Tuple[int, ...]], name: str, what: str) -> Tuple[int, ...]:
    if name not in shapes:
        raise ConversionError(f"not an official ViLD checkpoint: no variable {name} ({what})")
    return shapes[name]


def _numbered(shapes: Dict[str, Tuple[int, ...]], pattern: str, first: int = 0) -> List[int]:
    """Output widths of the kernels ``pattern.format(i)`` for i = first, first + 1, ..."""
    dims, i = [], first
    while pattern.format(i) in shapes:
        dims.append(shapes[pattern.format(i)][-1])
        i += 1
    return dims


def _resnet_depth(shapes: Dict[str, Tuple[int, ...]]) -> int:
    depths = {m.group(1) for m in (re.match(r"resnet(\d+)/", n) for n in shapes) if m}
    if len(depths) != 1:
        raise ConversionError(
            "not an official ViLD checkpoint: expected the variables of one ResNet "
            f"(resnet<depth>/...), found {sorted(depths) or 'none'}"
        )
    depth = int(depths.pop())
    if depth not in _BLOCKS:
        raise ConversionError(f"ResNet-{depth}: unknown depth (known: {sorted(_BLOCKS)})")
    return depth


def _rpn_conv_dims(shapes: Dict[str, Tuple[int, ...]]) -> List[int]:
    names = ["rpn_head/rpn/kernel"] + [f"rpn_head/rpn-{i}/kernel" for i in range(1, 16)]
    return [shapes[n][-1] for n in names if n in shapes]


def infer_architecture(shapes: Dict[str, Tuple[int, ...]]) -> OfficialArchitecture:
    """The model a checkpoint holds, from ``{variable name: shape}``; ConversionError if none."""
    depth = _resnet_depth(shapes)
    resnet = f"resnet{depth}/"
    classes = _require(shapes, _HEAD + "class-predict/kernel", "the text-embedding classifier")
    box_convs = _numbered(shapes, _HEAD + "conv_{}/kernel")
    box_fcs = _numbered(shapes, _HEAD + "fc{}/kernel", first=6)
    if not box_fcs:
        raise ConversionError(f"not an official ViLD checkpoint: no variable {_HEAD}fc6/kernel")
    fpn_channels = _require(shapes, "fpn/l2/kernel", "the FPN")[-1]
    pooled = shapes[_HEAD + "fc6/kernel"][0] // (box_convs or [fpn_channels])[-1]
    arch = OfficialArchitecture(
        depth=depth,
        ensemble=_HEAD + "distill_fc6/kernel" in shapes,
        stem_channels=_require(shapes, resnet + "conv2d/kernel", "the stem")[-1],
        res2_channels=_require(shapes, resnet + "conv2d_1/kernel", "res2's projection")[-1],
        bottleneck_channels=_require(shapes, resnet + "conv2d_2/kernel", "res2's 1x1")[-1],
        fpn_channels=fpn_channels,
        rpn_conv_dims=_rpn_conv_dims(shapes),
        num_anchors=_require(shapes, "rpn_head/rpn-class/kernel", "the RPN")[-1],
        box_conv_dims=box_convs,
        box_fc_dims=box_fcs,
        pooler_resolution=int(round(np.sqrt(pooled))),
        mask_conv_dims=_numbered(shapes, "mask_head/mask-conv-l{}/kernel"),
        num_classes=classes[1],
        embed_dim=classes[0],
    )
    _check_layout(shapes, arch)
    return arch


def _check_layout(shapes: Dict[str, Tuple[int, ...]], arch: OfficialArchitecture) -> None:
    box = _require(shapes, _HEAD + "box-predict/kernel", "the box regression")
    if box[-1] != 4:
        raise ConversionError(
            f"{_HEAD}box-predict/kernel has shape {list(box)}: class-specific box regression "
            "is not supported (the official ViLD configs are class-agnostic, [fc, 4])"
        )
    logits = _require(shapes, "mask_head/mask_fcn_logits/kernel", "the mask head")
    if logits[-1] != 1:
        raise ConversionError(
            f"mask_head/mask_fcn_logits/kernel has shape {list(logits)}: class-specific masks "
            "are not supported (the official ViLD configs are class-agnostic)"
        )
    side = arch.pooler_resolution
    if (
        side * side * (arch.box_conv_dims or [arch.fpn_channels])[-1]
        != shapes[_HEAD + "fc6/kernel"][0]
    ):
        raise ConversionError(
            f"{_HEAD}fc6/kernel: {shapes[_HEAD + 'fc6/kernel']} is not a square RoI"
        )
    if arch.num_anchors != 3:
        raise ConversionError(
            f"rpn_head/rpn-class/kernel: {arch.num_anchors} anchors per location; the official "
            "ViLD configs (and configs/LVIS-OV-official) have 3 (aspect ratios 1, 2, 0.5)"
        )


# ------------------------------------------------------------------------ the mapping
Transform = Callable[[np.ndarray], np.ndarray]
_Mapping = List[Tuple[str, str, Transform]]  # (TF name, torch key, array transform)


def _conv(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _dense(kernel: np.ndarray) -> np.ndarray:
    return kernel.T  # [in, out] -> [out, in]


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _bn_suffix(index: int) -> str:
    return "" if index == 0 else f"_{index}"


def _batch_norm(tf_scope: str, key: str) -> _Mapping:
    return [(f"{tf_scope}/{tf}", f"{key}.{pt}", _same) for tf, pt in _BN_FIELDS]


def _conv_bn(tf_conv: str, tf_bn: str, key: str, bias: bool) -> _Mapping:
    out = [(f"{tf_conv}/kernel", f"{key}.weight", _conv)]
    if bias:
        out.append((f"{tf_conv}/bias", f"{key}.bias", _same))
    return out + _batch_norm(tf_bn, f"{key}.norm")


def _resnet_mapping(arch: OfficialArchitecture) -> _Mapping:
    scope, out = f"resnet{arch.depth}/", []
    out += _conv_bn(scope + "conv2d", scope + "batch_normalization", "stem.conv1", False)
    index = 1
    for group, num_blocks in enumerate(_BLOCKS[arch.depth]):
        for block in range(num_blocks):
            names = (["shortcut"] if block == 0 else []) + ["conv1", "conv2", "conv3"]
            for name in names:
                tf_conv = f"{scope}conv2d_{index}"
                tf_bn = f"{scope}batch_normalization_{index}"
                out += _conv_bn(tf_conv, tf_bn, f"res{group + 2}.{block}.{name}", False)
                index += 1
    return [(tf, "backbone.bottom_up." + key, f) for tf, key, f in out]


def _fpn_rpn_mapping(arch: OfficialArchitecture) -> _Mapping:
    out: _Mapping = []
    for i, level in enumerate(range(2, 6)):
        for tf, key in (
            (f"fpn/l{level}", "lateral_convs"),
            (f"fpn/post_hoc_d{level}", "output_convs"),
        ):
            out += [(f"{tf}/kernel", f"backbone.{key}.{i}.weight", _conv)]
            out += [(f"{tf}/bias", f"backbone.{key}.{i}.bias", _same)]
    out += [("fpn/p6/kernel", "backbone.p6_conv.weight", _conv)]
    out += [("fpn/p6/bias", "backbone.p6_conv.bias", _same)]
    for i, level in enumerate(range(2, 7)):
        out += _batch_norm(f"fpn/p{level}-bn", f"backbone.norms.{i}")
    rpn = "proposal_generator.rpn_head."
    for j in range(len(arch.rpn_conv_dims)):
        tf = "rpn_head/rpn" + ("" if j == 0 else f"-{j}")
        out += [
            (f"{tf}/kernel", f"{rpn}convs.{j}.weight", _conv),
            (f"{tf}/bias", f"{rpn}convs.{j}.bias", _same),
        ]
        for i, level in enumerate(range(2, 7)):
            bn = f"rpn_head/rpn-l{level}-bn" + ("" if j == 0 else f"-{j}")
            out += _batch_norm(bn, f"{rpn}level_norms.{i}.{j}")
    out += [("rpn_head/rpn-class/kernel", rpn + "objectness_logits.weight", _conv)]
    out += [("rpn_head/rpn-class/bias", rpn + "objectness_logits.bias", _same)]
    order = np.array([a * 4 + j for a in range(arch.num_anchors) for j in _DELTA_ORDER])
    out += [
        ("rpn_head/rpn-box/kernel", rpn + "anchor_deltas.weight", lambda k: _conv(k[..., order]))
    ]
    out += [("rpn_head/rpn-box/bias", rpn + "anchor_deltas.bias", lambda b: b[order])]
    return out


def _box_tower(arch: OfficialArchitecture, prefix: str, key: str, first_bn: int) -> _Mapping:
    """One branch of the box head (``prefix`` "" or "distill_") -> ``key`` (OfficialBoxHead)."""
    out: _Mapping = []
    for i in range(len(arch.box_conv_dims)):
        bn = f"{_HEAD}batch_normalization{_bn_suffix(first_bn + i)}"
        out += _conv_bn(f"{_HEAD}{prefix}conv_{i}", bn, f"{key}.convs.{i}", True)
    channels = (arch.box_conv_dims or [arch.fpn_channels])[-1]
    side = arch.pooler_resolution
    for k in range(len(arch.box_fc_dims)):
        tf = f"{_HEAD}{prefix}fc{6 + k}"

        def fc(kernel, first=k == 0):
            if first:  # rows (h, w, c) of the NHWC RoI -> (c, h, w) of an NCHW flatten
                kernel = kernel.reshape(side, side, channels, -1).transpose(2, 0, 1, 3)
            return kernel.reshape(-1, kernel.shape[-1]).T

        out += [
            (f"{tf}/kernel", f"{key}.fcs.{k}.weight", fc),
            (f"{tf}/bias", f"{key}.fcs.{k}.bias", _same),
        ]
        bn = f"{_HEAD}batch_normalization{_bn_suffix(first_bn + len(arch.box_conv_dims) + k)}"
        out += _batch_norm(bn, f"{key}.fc_norms.{k}")
    return out


def _roi_heads_mapping(arch: OfficialArchitecture) -> _Mapping:
    out = _box_tower(arch, "", "roi_heads.box_head", 0)
    predictor = "roi_heads.box_predictor."
    out += [(_HEAD + "project-to-clip/kernel", predictor + "classifier.projection.weight", _dense)]
    out += [(_HEAD + "project-to-clip/bias", predictor + "classifier.projection.bias", _same)]
    out += [
        (
            _HEAD + "background-class-predict/kernel",
            predictor + "classifier.bg_embedding",
            lambda k: k[:, 0],
        )
    ]
    out += [
        (
            _HEAD + "box-predict/kernel",
            predictor + "bbox_pred.weight",
            lambda k: k[:, _DELTA_ORDER].T,
        )
    ]
    out += [(_HEAD + "box-predict/bias", predictor + "bbox_pred.bias", lambda b: b[_DELTA_ORDER])]
    if arch.ensemble:
        layers = len(arch.box_conv_dims) + len(arch.box_fc_dims)
        out += _box_tower(arch, "distill_", "roi_heads.image_head.box_head", layers)
        image = "roi_heads.image_head.classifier.projection."
        out += [(_HEAD + "distill-project-to-clip/kernel", image + "weight", _dense)]
        out += [(_HEAD + "distill-project-to-clip/bias", image + "bias", _same)]
    mask = "roi_heads.mask_head."
    for i in range(len(arch.mask_conv_dims)):
        bn = f"mask_head/batch_normalization{_bn_suffix(i)}"
        out += _conv_bn(f"mask_head/mask-conv-l{i}", bn, f"{mask}convs.{i}", True)
    out += [
        ("mask_head/conv5-mask/kernel", mask + "deconv.weight", _conv)
    ]  # [kh,kw,out,in]->[in,out,kh,kw]
    out += [("mask_head/conv5-mask/bias", mask + "deconv.bias", _same)]
    out += _batch_norm(
        f"mask_head/batch_normalization{_bn_suffix(len(arch.mask_conv_dims))}", mask + "deconv_norm"
    )
    out += [("mask_head/mask_fcn_logits/kernel", mask + "predictor.weight", _conv)]
    out += [("mask_head/mask_fcn_logits/bias", mask + "predictor.bias", _same)]
    return out


def variable_sources(arch: OfficialArchitecture) -> Dict[str, str]:
    """{vild_d2 state-dict key: the TF variable it is converted from} of ``arch``."""
    mapping = _resnet_mapping(arch) + _fpn_rpn_mapping(arch) + _roi_heads_mapping(arch)
    return {key: tf for tf, key, _ in mapping}


EMA_SUFFIX = "/ExponentialMovingAverage"  # a TF shadow variable: the weight's moving average


def ema_shadows(shapes: Dict[str, Tuple[int, ...]]) -> List[str]:
    """The weights of ``shapes`` that have an ExponentialMovingAverage shadow beside them."""
    return sorted(n[: -len(EMA_SUFFIX)] for n in shapes if n.endswith(EMA_SUFFIX))


def _read_weight(read: Callable[[str], np.ndarray], name: str, source: str) -> np.ndarray:
    """Variable ``source`` (``name`` or its shadow) as float32; ConversionError if not finite."""
    array = np.asarray(read(source))
    if not np.issubdtype(array.dtype, np.floating):
        raise ConversionError(f"{source}: a weight of dtype {array.dtype}, not a float")
    array = array.astype(np.float32)
    bad = int(array.size - np.isfinite(array).sum())
    if bad:
        raise ConversionError(
            f"{source}: {bad} of its {array.size} values are NaN or infinite (shape"
            f" {list(array.shape)}): the checkpoint is damaged"
        )
    return array


def convert_variables(
    shapes: Dict[str, Tuple[int, ...]],
    read: Callable[[str], np.ndarray],
    progress: Optional[Callable[[int, int], None]] = None,
    use_ema: bool = False,
) -> Tuple[Dict[str, torch.Tensor], np.ndarray, OfficialArchitecture]:
    """
    Args:
        shapes: {variable name: shape} of the checkpoint (optimiser state included or not).
        read: name -> array (e.g. :meth:`TFCheckpointReader.get_tensor`).
        progress: called with (variables done, total) after each variable.
        use_ema: take each weight's ExponentialMovingAverage shadow where it has one
            (:func:`ema_shadows`) instead of the weight itself.

    Returns:
        (state dict of the vild_d2 model, the vocabulary [C, D] float32 = the
        ``class-predict`` kernel transposed, the architecture).

    Raises:
        ConversionError: not an official ViLD checkpoint, a layout this converter does not
            know, variables left unmapped, or a weight that is not float or not finite
            (each named).
    """
    weights = {n: s for n, s in shapes.items() if not is_optimizer_state(n)}
    shadowed = set(ema_shadows(shapes)) if use_ema else set()
    if use_ema and not shadowed:
        raise ConversionError("--ema: the checkpoint has no ExponentialMovingAverage variables")

    def value(name: str) -> np.ndarray:
        return _read_weight(read, name, name + EMA_SUFFIX if name in shadowed else name)

    arch = infer_architecture(weights)
    mapping = _resnet_mapping(arch) + _fpn_rpn_mapping(arch) + _roi_heads_mapping(arch)
    vocabulary_name = _HEAD + "class-predict/kernel"
    missing = [tf for tf, _, _ in mapping if tf not in weights]
    if missing:
        raise ConversionError(
            f"{len(missing)} variables of an official {arch.name} are missing, e.g. "
            + ", ".join(missing[:5])
        )
    unused = sorted(set(weights) - {tf for tf, _, _ in mapping} - {vocabulary_name})
    if unused:
        raise ConversionError(
            f"{len(unused)} variables have no place in an official {arch.name}, e.g. "
            + ", ".join(unused[:5])
        )
    state: Dict[str, torch.Tensor] = {}
    for done, (tf, key, transform) in enumerate(mapping, 1):
        array = np.ascontiguousarray(transform(value(tf)))
        state[key] = torch.from_numpy(array)
        if progress is not None:
            progress(done, len(mapping) + 1)
    vocabulary = np.ascontiguousarray(value(vocabulary_name).T)
    if progress is not None:
        progress(len(mapping) + 1, len(mapping) + 1)
    return state, vocabulary, arch
