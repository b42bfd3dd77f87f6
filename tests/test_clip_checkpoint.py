"""A tiny random CLIP in OpenAI's checkpoint format, through the real loading path."""

import clip
import numpy as np
import pytest
import torch
from clip.model import build_model
from PIL import Image

from vild_d2.teacher import load_clip


def _encode(model, preprocess, image, texts):
    with torch.no_grad():
        img = model.encode_image(preprocess(image).unsqueeze(0).to(model.dtype))
        txt = model.encode_text(clip.tokenize(texts))
    return img.float(), txt.float()


def test_reload_encodes_like_the_original(tiny_clip_checkpoint):
    original = tiny_clip_checkpoint["model"]
    model, preprocess = load_clip(tiny_clip_checkpoint["path"], device="cpu")
    assert model.visual.input_resolution == 32
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    texts = ["a photo of a red triangle.", "a photo of a blue star."]
    img, txt = _encode(model, preprocess, image, texts)
    ref_img, ref_txt = _encode(original, preprocess, image, texts)
    assert img.shape == (1, 32) and txt.shape == (2, 32)
    # build_model stores weights in fp16 (as OpenAI's checkpoints are): equal up to that.
    cos = torch.nn.functional.cosine_similarity
    assert cos(img, ref_img).min() > 0.999
    assert cos(txt, ref_txt).min() > 0.999
    assert not torch.allclose(txt[0], txt[1])


def test_build_model_infers_the_shape(tiny_clip_checkpoint):
    state = torch.load(tiny_clip_checkpoint["path"], map_location="cpu")
    model = build_model(state)
    assert model.visual.conv1.weight.shape == (64, 3, 8, 8)
    assert model.text_projection.shape == (64, 32)
    assert len(model.transformer.resblocks) == 2


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_clip("no-such-model")
    junk = tmp_path / "junk.pt"
    torch.save({"weight": torch.zeros(2)}, junk)
    with pytest.raises(ValueError, match="junk.pt is not a CLIP-format checkpoint"):
        load_clip(str(junk))
