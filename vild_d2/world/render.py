"""
Render one shapes-world scene: objects of given categories, of varied size, rotation and
colour tint on a textured background (gradients, stripes, checks, blotches); later
objects may hide part of earlier ones, and masks are the exact visible parts (polygons,
from shapely). Also which categories each image of a split draws.
"""

import math
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from shapely.geometry import Polygon
from shapely.geometry import box as shapely_box

from .spec import COLOURS, SHAPES, ShapesWorldSpec, category_names, concept_novel_ids, novel_kinds

__all__ = ["render_scene", "scene_plan", "scene_categories"]


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> List[float]:
    ca, sa = math.cos(angle), math.sin(angle)
    flat = []
    for x, y in SHAPES[shape]:
        flat += [cx + radius * (ca * x - sa * y), cy + radius * (sa * x + ca * y)]
    return flat


def _background(rng: np.random.Generator, size: int, textured: bool) -> Image.Image:
    """Muted (low-saturation) colour with a gradient, stripes, checks or blotches, and noise."""
    base = rng.integers(90, 170) + rng.integers(-15, 16, size=3)
    pixels = np.broadcast_to(base.astype(np.float64), (size, size, 3)).copy()
    if textured:
        yy, xx = np.mgrid[0:size, 0:size] / size
        angle = rng.uniform(0, math.pi)
        along = xx * math.cos(angle) + yy * math.sin(angle)
        freq = rng.uniform(3, 10)
        kind = int(rng.integers(4))
        if kind == 0:
            pattern = along - along.mean()
        elif kind == 1:
            pattern = 0.5 * np.sin(2 * math.pi * freq * along)
        elif kind == 2:
            pattern = 0.5 * np.sign(
                np.sin(2 * math.pi * freq * xx) * np.sin(2 * math.pi * freq * yy)
            )
        else:
            coarse = rng.uniform(-0.5, 0.5, size=(max(2, size // 16),) * 2)
            pattern = np.asarray(
                Image.fromarray(coarse.astype(np.float32)).resize((size, size), Image.BILINEAR)
            )
        tint = 1 + rng.uniform(-0.3, 0.3, size=3)
        pixels += rng.uniform(20, 50) * pattern[..., None] * tint
    pixels += rng.normal(0, 10 if not textured else 8, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _parts(geometry) -> List[Polygon]:
    parts = list(getattr(geometry, "geoms", [geometry]))
    return [p for p in parts if isinstance(p, Polygon) and p.area >= 1.0]


def render_scene(rng: np.random.Generator, spec: ShapesWorldSpec, categories: Sequence[int]):
    """
    Draw objects of the given categories (indices into :func:`category_names`) in order,
    later ones on top, on a new background.

    Returns:
        (PIL RGB image [size, size], list of objects placed: dicts with ``category``,
        ``index`` (its position in ``categories``), ``polygons`` (flat XY lists of the
        visible parts), ``bbox`` (XYWH of the visible part) and ``area`` (visible,
        pixels)). Objects that find no place, or end up hidden, are skipped.
    """
    size = spec.image_size
    names = category_names(spec)
    img = _background(rng, size, spec.textured)
    draw = ImageDraw.Draw(img)
    placed = []  # [category, full polygon, full area, visible geometry]
    frame = shapely_box(0, 0, size, size)  # vertices on the border may pass it by rounding
    for index, cat in enumerate(categories):
        for _ in range(30):  # rejection sampling of a placement that hides no one too much
            r = float(rng.uniform(*spec.object_size))
            cx, cy = rng.uniform(r, size - r, size=2)
            colour, shape = names[cat].split(" ")
            flat = _polygon(
                shape, cx, cy, r, math.radians(float(rng.uniform(-spec.max_tilt, spec.max_tilt)))
            )
            poly = Polygon(list(zip(flat[0::2], flat[1::2]))).buffer(0).intersection(frame)
            if spec.max_occlusion <= 0:
                ok = all(poly.distance(p[1]) >= 2 for p in placed)
                updated = [p[3] for p in placed]
            else:
                updated = [p[3].difference(poly) for p in placed]
                ok = all(
                    v.area >= (1 - spec.max_occlusion) * p[2]
                    and all(len(part.interiors) == 0 for part in _parts(v))
                    for v, p in zip(updated, placed)
                )
            if ok:
                for p, v in zip(placed, updated):
                    p[3] = v
                fill = np.clip(np.array(COLOURS[colour]) + rng.integers(-20, 21, size=3), 0, 255)
                draw.polygon(flat, fill=tuple(int(v) for v in fill))
                placed.append([cat, poly, poly.area, poly, index])
                break
    objects = [_visible_object(cat, visible, index) for cat, _, _, visible, index in placed]
    return img, [o for o in objects if o is not None]


def _visible_object(cat: int, visible, index: int):
    """The object dict of a placed object from its visible geometry (None: all hidden)."""
    parts = _parts(visible)
    if not parts:
        return None
    x0 = min(p.bounds[0] for p in parts)
    y0 = min(p.bounds[1] for p in parts)
    x1 = max(p.bounds[2] for p in parts)
    y1 = max(p.bounds[3] for p in parts)
    return {
        "category": int(cat),
        "index": index,
        "polygons": [
            [round(v, 2) for xy in list(p.exterior.coords)[:-1] for v in xy] for p in parts
        ],
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": float(sum(p.area for p in parts)),
    }


def scene_plan(
    rng, spec: ShapesWorldSpec, num_images: int, long_tailed: bool
) -> List[List[Tuple[int, bool]]]:
    """
    Per image, its objects as (category index into :func:`category_names`, annotated).
    Uniform (every object annotated) or the long-tailed training split: base categories
    Zipf-distributed, each novel category annotated in ``novel_train_images`` images, and
    each concept category's objects also placed, unannotated, in
    a ``concept_unannotated_share`` of the images (at least one).
    """
    k = len(category_names(spec))
    counts = rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1, size=num_images)
    if not long_tailed:
        return [[(c, True) for c in rng.integers(k, size=n).tolist()] for n in counts]
    novel = sorted(novel_kinds(spec))
    base = np.array([c for c in range(k) if c not in novel])
    weights = (rng.permutation(len(base)) + 1.0) ** -spec.base_zipf
    plan = [
        [(c, True) for c in rng.choice(base, size=n, p=weights / weights.sum()).tolist()]
        for n in counts
    ]
    taken = set()
    for cat in novel:
        lo, hi = spec.novel_train_images
        for i in rng.permutation(num_images)[: int(rng.integers(lo, hi + 1))]:
            j = int(rng.integers(len(plan[i])))
            if (int(i), j) not in taken:
                plan[i][j] = (cat, True)
                taken.add((int(i), j))
    if spec.concept_shapes:
        lo, hi = (max(1, round(share * num_images)) for share in spec.concept_unannotated_share)
        for cat in concept_novel_ids(spec):
            for i in rng.permutation(num_images)[: int(rng.integers(lo, hi + 1))]:
                plan[i].insert(
                    int(rng.integers(len(plan[i]) + 1)), (cat, False)
                )  # drawn among the others
    return plan


def scene_categories(
    rng, spec: ShapesWorldSpec, num_images: int, long_tailed: bool
) -> List[List[int]]:
    """:func:`scene_plan` without the annotated flags: per image, its objects' categories."""
    return [[c for c, _ in objects] for objects in scene_plan(rng, spec, num_images, long_tailed)]
