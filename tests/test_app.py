"""The try-it page driven through gradio_client, as a program (or a person) uses it."""

import json
import os
import urllib.request

import numpy as np
import pytest

pytest.importorskip("gradio_client", reason="the page's optional extra: install.py --extra app")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from .helpers.app_server import AppServer  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_model_folder, tiny_lvis, tmp_path_factory):
    out = tmp_path_factory.mktemp("app")
    examples = os.path.join(tiny_lvis["root"], "val")
    args = ["--model", tiny_model_folder["path"], "--models-root", str(out / "none")]
    server = AppServer(args + ["--examples", examples, "--device", "cpu"], str(out / "app"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image(tiny_lvis):
    folder = os.path.join(tiny_lvis["root"], "val")
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def _scores(table):
    return [row[1] for row in table["data"]]


def test_upload_words_slider(server, image):
    client = Client(server.url, verbose=False)
    picture, table, status, *_ = client.predict(
        handle_file(image), "tiny_vild", "red circle, blue star, hat", 0.05, api_name="/detect"
    )
    assert os.path.isfile(picture)
    assert table["headers"] == ["name", "score", "x0", "y0", "x1", "y1"]
    rows = table["data"]
    assert rows and {r[0] for r in rows} <= {"red circle", "blue star", "hat"}
    assert min(_scores(table)) >= 0.05 and f"{len(rows)} of {len(rows)} detections" in status
    # the slider filters the last detections (no image, no words: the model cannot run)
    median = sorted(_scores(table))[len(rows) // 2]
    picture2, table2, status2 = client.predict(median, api_name="/refilter")
    assert (
        os.path.isfile(picture2) and f"{len(table2['data'])} of {len(rows)} detections" in status2
    )
    assert table2["data"] == [r for r in rows if r[1] >= median] and len(table2["data"]) < len(rows)
    # the uploaded image went to the page's own temporary folder, under --output
    uploaded = [f for _, _, files in os.walk(os.path.join(server.output, "tmp")) for f in files]
    assert uploaded


@pytest.mark.parametrize(
    "words, message", [("", "is empty"), (" , ", "empty name"), ("mug, mug", "the same name")]
)
def test_bad_words_are_a_message(server, image, words, message):
    client = Client(server.url, verbose=False)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(image), "tiny_vild", words, 0.3, api_name="/detect")


def test_no_image_is_a_message(server):
    client = Client(server.url, verbose=False)
    with pytest.raises(AppError, match="Upload an image"):
        client.predict(None, "tiny_vild", "hat", 0.3, api_name="/detect")


def test_without_a_model_the_page_says_how_to_get_one(tmp_path):
    server = AppServer(["--models-root", str(tmp_path / "none")], str(tmp_path / "app"))
    try:
        with urllib.request.urlopen(server.url + "config", timeout=30) as response:
            config = json.load(response)
    finally:
        server.stop()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert any(isinstance(t, str) and "make demo" in t for t in texts)


def test_a_converted_release_on_the_page(converted_oracle, image, tmp_path):
    from vild_d2.teacher import build_clip, save_clip_checkpoint

    from .conftest import TINY_CLIP_SHAPE

    clip_512 = str(tmp_path / "clip_512.pt")  # stands in for ViT-B/32 (no internet here)
    save_clip_checkpoint(build_clip(seed=0, **{**TINY_CLIP_SHAPE, "embed_dim": 512}), clip_512)
    args = ["--model", converted_oracle, "--teacher", clip_512, "--device", "cpu"]
    server = AppServer(args + ["--models-root", str(tmp_path / "none")], str(tmp_path / "app"))
    try:
        client = Client(server.url, verbose=False)
        name = os.path.basename(converted_oracle)
        _, table, status, *_ = client.predict(
            handle_file(image), name, "cat; teapot", 0.05, api_name="/detect"
        )
    finally:
        server.stop()
    assert {row[0] for row in table["data"]} <= {"cat", "teapot"} and "clip_512.pt" in status


def test_a_large_photo_is_shrunk_before_detection(server, image, tmp_path):
    from PIL import Image

    from vild_d2.app.page import PAGE_MAX_SIDE, shrink

    assert shrink(np.zeros((30, 40, 3), np.uint8), 1333).shape == (30, 40, 3)
    assert shrink(np.zeros((3000, 4000, 3), np.uint8), 1333).shape == (1000, 1333, 3)
    big = tmp_path / "big.png"
    Image.open(image).convert("RGB").resize((2000, 1500)).save(big)
    client = Client(server.url, verbose=False)
    picture, table, *_ = client.predict(
        handle_file(str(big)), "tiny_vild", "red circle, hat", 0.05, api_name="/detect"
    )
    assert table["data"] and max(max(r[4], r[5]) for r in table["data"]) <= PAGE_MAX_SIDE
    assert max(Image.open(picture).size) <= PAGE_MAX_SIDE
