"""
The try-it page (Gradio): pick or upload an image, type words, see what ViLD finds.

One detect call runs the model at :data:`LOWEST_SCORE`; the score slider then only filters
those detections (no model run). Errors a user can cause (no image, no or repeated words)
come back as a message on the page (``gr.Error``), never a stack trace.
"""

import os
import time
from typing import Dict, List, Optional, Sequence

import gradio as gr
import numpy as np
from PIL import Image

from ..inference.detector import Detections, OpenVocabularyDetector, parse_words
from ..inference.drawing import draw_detections
from ..inference.model_folder import ModelFolder

__all__ = ["build_page", "LOWEST_SCORE", "TABLE_HEADERS", "NO_MODEL_MESSAGE"]

LOWEST_SCORE = 0.05  # the model runs at this score threshold; the slider filters above it
# uploads are shrunk to this longer side, pixels (LVIS's test size is at most 1333): masks of
# up to 100 detections are pasted at the image's size, 12 MP each for a phone's photo
PAGE_MAX_SIDE = 1333
DEFAULT_SCORE = 0.3  # the slider's start
TABLE_HEADERS = ["name", "score", "x0", "y0", "x1", "y1"]  # box: XYXY, image pixels
NO_MODEL_MESSAGE = (
    "No model to run yet: `make demo` trains the world's models (`make demo ARGS=--quick` in a"
    " few minutes), or `python tools/convert_official_checkpoint.py --download"
    " r50_vild_ensemble` converts a released one; then `make app ARGS='--model FOLDER'`."
)


class ModelShelf:
    """The page's models by name, each loaded on first use and kept."""

    def __init__(self, folders: Sequence[ModelFolder], device: Optional[str] = None):
        self.folders: Dict[str, ModelFolder] = {_label(f, folders): f for f in folders}
        self.device = device
        self._loaded: Dict[str, OpenVocabularyDetector] = {}

    def names(self) -> List[str]:
        return list(self.folders)

    def get(self, name: str) -> OpenVocabularyDetector:
        if name not in self.folders:
            raise gr.Error(f"no model named {name!r} on this page")
        if name not in self._loaded:
            self._loaded[name] = OpenVocabularyDetector(self.folders[name], self.device)
        return self._loaded[name]


def _label(folder: ModelFolder, all_folders: Sequence[ModelFolder]) -> str:
    """The folder's name, with its parent's when two folders share a name."""
    same = [f for f in all_folders if f.name == folder.name]
    if len(same) == 1:
        return folder.name
    parts = folder.path.rstrip("/").split("/")
    return "/".join(parts[-2:])


def table_rows(detections: Detections) -> List[list]:
    """One row per detection: name, score, box XYXY (pixels), as in :data:`TABLE_HEADERS`."""
    return [[r["name"], r["score"], *r["box"]] for r in detections.records()]


def show(image: Optional[np.ndarray], detections: Optional[Detections], score: float):
    """(picture, table rows) of the detections scoring at least ``score``."""
    if image is None or detections is None:
        return None, []
    kept = detections.above(score)
    return draw_detections(image, kept.instances, kept.names), table_rows(kept)


def detect(shelf: ModelShelf, image, model: str, words: str, score: float):
    """The page's Detect: runs the model, returns (picture, rows, status, state)."""
    if image is None:
        raise gr.Error("Upload an image or pick an example first.")
    image = shrink(image, PAGE_MAX_SIDE)
    try:
        names = parse_words(words or "")
    except ValueError as e:
        raise gr.Error(str(e)) from None
    try:
        detector = shelf.get(model)
        start = time.perf_counter()
        detections = detector(image, names, score_threshold=LOWEST_SCORE)
        seconds = time.perf_counter() - start
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise gr.Error(str(e)) from None
    picture, rows = show(image, detections, score)
    run = (
        f"{len(names)} words, {seconds:.2f} s on {detector.device} ({model}; words embedded by"
        f" {os.path.basename(detector.teacher)})"
    )
    state = {"image": image, "detections": detections, "run": run}
    return picture, rows, _status(len(rows), state, score), state


def _status(shown: int, state: dict, score: float) -> str:
    """The line under the picture: how many are shown, of how many, and the run's facts."""
    return (
        f"{shown} of {len(state['detections'])} detections at score >= {score:.2f}, {state['run']}"
    )


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` ([H, W, 3] uint8) resized to ``max_side`` on its longer side if larger."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def refilter(state: Optional[dict], score: float):
    """The slider: the last detections above ``score``, without running the model."""
    if not state:
        return None, [], ""
    picture, rows = show(state["image"], state["detections"], score)
    return picture, rows, _status(len(rows), state, score)


def build_page(shelf: ModelShelf, examples: Sequence[str] = ()) -> gr.Blocks:
    """The page; ``examples``: image paths shown as a row to click."""
    names = shelf.names()
    first = shelf.folders[names[0]] if names else None
    with gr.Blocks(title="vild_d2: try ViLD", analytics_enabled=False) as page:
        gr.Markdown(
            "## Try ViLD: open-vocabulary detection\nType any words, comma-separated (or"
            " `;` as in the official Colab); the model scores every region against their CLIP"
            " text embeddings."
        )
        if not names:
            gr.Markdown(NO_MODEL_MESSAGE, elem_id="no-model")
            return page
        state = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="image", type="numpy", sources=["upload"], elem_id="image")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="examples")
                model = gr.Dropdown(names, value=names[0], label="model", elem_id="model")
                words = gr.Textbox(
                    value=", ".join(first.example_words), label="words", elem_id="words"
                )
                score = gr.Slider(
                    LOWEST_SCORE, 1.0, value=DEFAULT_SCORE, step=0.05,
                    label="score threshold", elem_id="score",
                )  # fmt: skip
                button = gr.Button("Detect", variant="primary", elem_id="detect")
            with gr.Column():
                picture = gr.Image(label="detections", type="numpy", elem_id="picture")
                status = gr.Markdown(elem_id="status")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="detections", elem_id="table")
        button.click(
            lambda *a: detect(shelf, *a),
            inputs=[image, model, words, score],
            outputs=[picture, table, status, state],
            api_name="detect",
        )
        score.change(
            refilter, inputs=[state, score], outputs=[picture, table, status], api_name="refilter"
        )
        model.change(
            lambda m: ", ".join(shelf.folders[m].example_words), inputs=[model], outputs=[words]
        )
    return page
