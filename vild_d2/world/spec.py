"""
The shapes world's specification: its shapes, colours and categories (colour x shape
pairs), which of them are novel and of what kind, and the transfer vocabulary.

Two kinds of novel category (since world v3):

* **compositional**: ``num_novel`` colour x shape pairs of the base shapes, chosen so
  that every colour and every shape also occurs in base categories: new combinations of
  known attributes (the case a text classifier handles best);
* **concept**: every colour of the ``concept_shapes``, shapes that no base category has.
  Like LVIS's rare objects, their objects appear *unannotated* in many training images
  (:mod:`vild_d2.world.splits`).
"""

import json
import math
from dataclasses import dataclass, fields
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = [
    "SHAPES",
    "COLOURS",
    "BASE_SHAPES",
    "WORLD_VERSION",
    "ShapesWorldSpec",
    "spec_from_json",
    "category_names",
    "category_shapes",
    "designed_novel_ids",
    "concept_novel_ids",
    "novel_kinds",
    "TRANSFER_COLOURS",
    "transfer_category_names",
]


# Bumped when the generator's output for a given spec changes.
WORLD_VERSION = 4


def _heart(n: int = 40) -> List[Tuple[float, float]]:
    pts = [
        (
            16 * math.sin(t) ** 3,
            -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)),
        )
        for t in (2 * math.pi * k / n for k in range(n))
    ]
    cy = (max(y for _, y in pts) + min(y for _, y in pts)) / 2
    r = max(math.hypot(x, y - cy) for x, y in pts)
    return [(x / r, (y - cy) / r) for x, y in pts]


# name -> vertices of the unit shape (radius 1, centred at 0), as (x, y) pairs.
SHAPES: Dict[str, List[Tuple[float, float]]] = {
    "circle": [(math.cos(2 * math.pi * k / 32), math.sin(2 * math.pi * k / 32)) for k in range(32)],
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)],
    "star": [
        (
            (1.0 if k % 2 == 0 else 0.45) * math.sin(math.pi * k / 5),
            -(1.0 if k % 2 == 0 else 0.45) * math.cos(math.pi * k / 5),
        )
        for k in range(10)
    ],
    "cross": [
        (-0.3, -1),
        (0.3, -1),
        (0.3, -0.3),
        (1, -0.3),
        (1, 0.3),
        (0.3, 0.3),
        (0.3, 1),
        (-0.3, 1),
        (-0.3, 0.3),
        (-1, 0.3),
        (-1, -0.3),
        (-0.3, -0.3),
    ],
    "hexagon": [(math.cos(math.pi * k / 3), math.sin(math.pi * k / 3)) for k in range(6)],
    # the default concept shapes (no base category has them)
    "heart": _heart(),
    "arrow": [
        (-1.0, -0.28),
        (0.15, -0.28),
        (0.15, -0.7),
        (1.0, 0.0),
        (0.15, 0.7),
        (0.15, 0.28),
        (-1.0, 0.28),
    ],
}
BASE_SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")

# name -> RGB
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 50, 190),
    "orange": (245, 140, 30),
}


@dataclass
class ShapesWorldSpec:
    """What to generate. Sizes in pixels; counts per split."""

    seed: int = 0
    num_train: int = 8
    num_val: int = 4
    image_size: int = 128
    objects_per_image: Tuple[int, int] = (2, 5)  # inclusive range
    object_size: Tuple[int, int] = (14, 40)  # radius range, pixels
    max_occlusion: float = (
        0.35  # at most this fraction of an object hidden by later ones; 0: none touch
    )
    max_tilt: float = 180.0  # degrees: objects are rotated uniformly in [-max_tilt, max_tilt]
    textured: bool = True  # textured backgrounds (else flat colour + noise)
    num_novel: int = 10  # compositional novel categories (new pairs of base shapes and colours)
    novel_train_images: Tuple[int, int] = (1, 3)  # annotated training images of each novel category
    base_zipf: float = 0.8  # base categories' training frequency ~ rank^-base_zipf
    shapes: Sequence[str] = BASE_SHAPES  # shapes of the base (and compositional novel) categories
    colours: Sequence[str] = tuple(COLOURS)
    concept_shapes: Sequence[str] = (
        "heart",
        "arrow",
    )  # new concepts: all their categories are novel
    # share of the training images with an unannotated object, per concept category (8-14
    # of 400 in world v3: ~1/3 of the images hold one)
    concept_unannotated_share: Tuple[float, float] = (0.02, 0.035)
    version: int = WORLD_VERSION  # of the generator that wrote the world


def spec_from_json(json_file: str) -> ShapesWorldSpec:
    """The spec a shapes-world json was generated with (kept in its ``info``)."""
    with open(json_file, encoding="utf-8") as f:
        found = json.load(f).get("info", {}).get("spec")
    if found is None:
        raise ValueError(f"{json_file}: no generator spec in its 'info' (not a shapes-world json?)")
    found.setdefault("version", 2)  # worlds written before the field existed
    found.setdefault("concept_shapes", [])
    # keys of older generators (v3's concept_unannotated_images) are left out: the kept
    # version already says that the world is another one
    known = {f.name for f in fields(ShapesWorldSpec)}
    return ShapesWorldSpec(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in found.items() if k in known}
    )


def category_names(spec: ShapesWorldSpec) -> List[str]:
    """
    Category names in id order (id = index + 1): every colour x base-shape pair, then
    every colour x concept-shape pair.
    """
    return [f"{c} {s}" for s in (*spec.shapes, *spec.concept_shapes) for c in spec.colours]


def category_shapes(spec: ShapesWorldSpec) -> List[int]:
    """
    The shape of each category (index into ``(*spec.shapes, *spec.concept_shapes)``), in
    :func:`category_names` order.
    """
    return [i // len(spec.colours) for i in range(len(category_names(spec)))]


def concept_novel_ids(spec: ShapesWorldSpec) -> List[int]:
    """Indices (into :func:`category_names`) of the concept categories (all novel)."""
    first = len(spec.shapes) * len(spec.colours)
    return list(range(first, first + len(spec.concept_shapes) * len(spec.colours)))


def novel_kinds(spec: ShapesWorldSpec) -> Dict[int, str]:
    """Index of each novel category -> "compositional" or "concept"."""
    kinds = {i: "compositional" for i in designed_novel_ids(spec)}
    kinds.update({i: "concept" for i in concept_novel_ids(spec)})
    return kinds


def designed_novel_ids(spec: ShapesWorldSpec) -> List[int]:
    """
    Indices (into :func:`category_names`) of the compositional novel categories: at most
    ceil(num_novel / #shapes) per shape and per colour, so each shape and colour is also
    seen in base categories.
    """
    n_shapes, n_colours = len(spec.shapes), len(spec.colours)
    per = math.ceil(spec.num_novel / n_shapes) if spec.num_novel else 0
    if spec.num_novel and (per >= n_colours or per * math.ceil(n_shapes / n_colours) >= n_shapes):
        raise ValueError(
            f"num_novel={spec.num_novel} leaves some shape or colour without a base category"
        )
    rng = np.random.default_rng([spec.seed, 1])  # independent of the rendering stream
    shape_order, colour_order = rng.permutation(n_shapes), rng.permutation(n_colours)
    step = n_colours // per if per else 1
    return sorted(
        int(
            shape_order[n % n_shapes] * n_colours
            + colour_order[(n % n_shapes + (n // n_shapes) * step) % n_colours]
        )
        for n in range(spec.num_novel)
    )


TRANSFER_COLOURS = ("blue", "red", "yellow")


def transfer_category_names(spec: ShapesWorldSpec) -> List[str]:
    """The transfer dataset's categories in id order (a subset of the world's, reordered)."""
    return [
        f"{c} {s}"
        for c in TRANSFER_COLOURS
        if c in spec.colours
        for s in (*spec.shapes, *spec.concept_shapes)
    ]
