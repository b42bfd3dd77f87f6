"""
Build, save and load CLIP models in OpenAI's checkpoint format.

``load_clip`` is the one way vild_d2 loads a teacher: an OpenAI model name
(``clip.load`` downloads it) or a local CLIP-format checkpoint (a state dict or a
TorchScript archive, as OpenAI publishes). ``build_clip`` makes a randomly initialised
CLIP of any shape with the ``clip`` package's own model class, e.g. the small teachers of
the offline demo world and of the tests; ``save_clip_checkpoint`` writes it so that
``load_clip`` reads it exactly as it reads a real checkpoint.
"""

import os
import warnings
from typing import Dict, Tuple, Union

import clip
import clip.clip as clip_module
import torch
from clip.model import CLIP, build_model

__all__ = ["CLIP_VIT_B_32", "build_clip", "save_clip_checkpoint", "load_clip"]

# The shape of OpenAI's ViT-B/32 (the arguments of clip.model.CLIP).
CLIP_VIT_B_32: Dict[str, Union[int, Tuple[int, ...]]] = dict(
    embed_dim=512,
    image_resolution=224,
    vision_layers=12,
    vision_width=768,
    vision_patch_size=32,
    context_length=77,
    vocab_size=49408,
    transformer_width=512,
    transformer_heads=8,
    transformer_layers=12,
)


def build_clip(seed: int = 0, **shape) -> CLIP:
    """
    A randomly initialised CLIP (float32, eval mode). ``shape`` overrides the arguments of
    ``CLIP_VIT_B_32``. ``clip.model.build_model`` infers ``transformer_heads`` as
    ``transformer_width // 64``, so widths must be multiples of 64 to round-trip.
    """
    args = dict(CLIP_VIT_B_32, **shape)
    if (
        args["transformer_width"] % 64
        or args["transformer_heads"] != args["transformer_width"] // 64
    ):
        raise ValueError(
            f"transformer_width={args['transformer_width']} with transformer_heads="
            f"{args['transformer_heads']}: CLIP checkpoints imply heads = width // 64"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**args)
    return model.float().eval()


def save_clip_checkpoint(model: CLIP, path: str) -> None:
    """Write ``model``'s state dict as a CLIP-format checkpoint (atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)


def load_clip(name_or_path: str, device: Union[str, torch.device] = "cpu"):
    """
    Load a CLIP teacher the way ``clip.load(..., jit=False)`` does: rebuild the model with
    ``clip.model.build_model`` from the checkpoint's state dict.

    Args:
        name_or_path: an OpenAI model name (``clip.available_models()``, downloaded to
            ``~/.cache/clip`` on first use) or a CLIP-format checkpoint file (a state
            dict, or a TorchScript archive as OpenAI publishes).
        device: where to put it. As in ``clip.load``, weights stay fp16 on CUDA and are
            cast to fp32 on CPU.

    Returns:
        (model, preprocess): the CLIP module in eval mode and its PIL preprocessing.
    """
    if os.path.isfile(name_or_path):
        path = name_or_path
    elif name_or_path in clip.available_models():
        try:
            path = clip_module._download(
                clip_module._MODELS[name_or_path], os.path.expanduser("~/.cache/clip")
            )
        except OSError as e:  # URLError is an OSError
            raise RuntimeError(
                f"cannot download CLIP '{name_or_path}' ({e}); on a machine without internet "
                "pass the path of a local CLIP checkpoint file instead"
            ) from None
    else:
        raise FileNotFoundError(
            f"CLIP teacher '{name_or_path}' is neither a file nor one of {clip.available_models()}"
        )
    state_dict = _read_state_dict(path)
    try:
        model = build_model(state_dict)
    except (KeyError, RuntimeError, IndexError) as e:
        raise ValueError(
            f"{path} is not a CLIP-format checkpoint (state dict or TorchScript archive of "
            f"an OpenAI CLIP model): {type(e).__name__}: {e}"
        ) from None
    model = model.to(device)
    if torch.device(device).type == "cpu":
        model = model.float()
    return model.eval(), clip_module._transform(model.visual.input_resolution)


def _read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """State dict of a TorchScript archive or of a plain ``torch.save``d dict."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
            return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        pass  # not a TorchScript archive
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a CLIP-format checkpoint: cannot read it ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a CLIP-format checkpoint: it holds a {type(state)}")
    return state
