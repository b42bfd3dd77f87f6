"""
Generate "shapes world": a synthetic open-vocabulary detection dataset in LVIS v1 json
format.

Each category is a colour x shape pair ("red triangle"). Images hold several objects of
varied size, rotation and colour tint on a textured background (gradients, stripes,
checks, blotches); later objects may hide part of earlier ones, and masks are the exact
visible parts (polygons, from shapely). The training split is long-tailed like LVIS:
base categories follow a Zipf law and the novel ones are rare. Two kinds of novel
category (since world v3):

* **compositional**: ``num_novel`` colour x shape pairs of the base shapes, chosen so
  that every colour and every shape also occurs in base categories: new combinations of
  known attributes (the case a text classifier handles best);
* **concept**: every colour of the ``concept_shapes``, shapes that no base category has.
  Like LVIS's rare objects, their objects appear *unannotated* in many training images
  (in a ``concept_unannotated_share`` of them per category, so that the distillation
  sees them as often whatever the split's size; listed in the image's
  ``not_exhaustive_category_ids``) and annotated in only a few.

Each novel category is annotated in ``novel_train_images`` training images and is LVIS
"rare"; the other categories are split into "c" and "f" by their number of training
images in LVIS v1's c:f proportion. ``shapes_world_train_ov`` drops the rare
annotations. Val is uniform over all categories and exhaustively annotated: every
category absent from a val image is in its ``neg_category_ids``, so LVIS evaluation
counts false positives on every image. Deterministic for a given spec.

Layout written under ``root``:
    root/train/000001.png ...            root/val/000001.png ...
    root/annotations/train.json          root/annotations/val.json

:func:`generate_transfer_split` adds a *transfer* dataset (another vocabulary, as PASCAL
VOC or COCO are to a model trained on LVIS): new val-style images of the same world,
annotated only for ``TRANSFER_COLOURS`` x every shape, listed colour by colour (another
order), so objects of other colours are outside its vocabulary and unannotated:
    root/transfer/000001.png ...         root/annotations/transfer.json
"""

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from shapely.geometry import Polygon
from shapely.geometry import box as shapely_box

__all__ = [
    "SHAPES",
    "COLOURS",
    "WORLD_VERSION",
    "ShapesWorldSpec",
    "generate_shapes_world",
    "category_names",
    "designed_novel_ids",
    "concept_novel_ids",
    "novel_kinds",
    "render_scene",
    "scene_categories",
    "scene_plan",
    "spec_from_json",
    "TRANSFER_COLOURS",
    "transfer_category_names",
    "generate_transfer_split",
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
    objects = []
    for cat, _, _, visible, index in placed:
        parts = _parts(visible)
        if not parts:
            continue
        x0 = min(p.bounds[0] for p in parts)
        y0 = min(p.bounds[1] for p in parts)
        x1 = max(p.bounds[2] for p in parts)
        y1 = max(p.bounds[3] for p in parts)
        objects.append(
            {
                "category": int(cat),
                "index": index,
                "polygons": [
                    [round(v, 2) for xy in list(p.exterior.coords)[:-1] for v in xy] for p in parts
                ],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(sum(p.area for p in parts)),
            }
        )
    return img, objects


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


def _render_split(
    rng, spec: ShapesWorldSpec, num_images: int, root: str, split: str
) -> Tuple[List[dict], List[dict]]:
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    num_cats = len(category_names(spec))
    for image_id, plan in enumerate(scene_plan(rng, spec, num_images, split == "train"), start=1):
        img, objects = render_scene(rng, spec, [c for c, _ in plan])
        shown = set()
        unannotated = set()
        for obj in objects:
            if not plan[obj["index"]][1]:
                unannotated.add(obj["category"] + 1)
                continue
            shown.add(obj["category"] + 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["category"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "segmentation": obj["polygons"],
                }
            )
        file_name = f"{split}/{image_id:06d}.png"
        img.save(os.path.join(root, file_name))
        # val is exhaustively annotated: every absent category is a verified negative
        negatives = [c for c in range(1, num_cats + 1) if c not in shown] if split == "val" else []
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": spec.image_size,
                "width": spec.image_size,
                "license": 1,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": "",
                "neg_category_ids": negatives,
                "not_exhaustive_category_ids": sorted(unannotated - shown),
            }
        )
    return images, annotations


# LVIS v1 train: 337 rare, 461 common, 405 frequent categories of 1203.
LVIS_FREQUENCY_SHARES = (("r", 337 / 1203), ("c", 461 / 1203), ("f", 405 / 1203))


def _frequencies(train_anns: List[dict], num_cats: int, rare: Sequence[int]) -> List[str]:
    """
    LVIS frequency per category: the novel categories (``rare``, indices) are "r"; the
    others are ranked by their number of training images (ties by id) and split into "c"
    and "f" in LVIS v1's c:f proportion. LVIS's absolute thresholds (10 and 100 images of
    ~100k) mean nothing for a small dataset.
    """
    image_sets = [set() for _ in range(num_cats)]
    for ann in train_anns:
        image_sets[ann["category_id"] - 1].add(ann["image_id"])
    out = ["r" if i in set(rare) else "" for i in range(num_cats)]
    order = sorted(
        (i for i in range(num_cats) if not out[i]), key=lambda i: (len(image_sets[i]), i)
    )
    shares = dict(LVIS_FREQUENCY_SHARES)
    num_common = round(len(order) * shares["c"] / (shares["c"] + shares["f"]))
    for rank, i in enumerate(order):
        out[i] = "c" if rank < num_common else "f"
    return out


# The transfer dataset's vocabulary: these colours x every shape, colour by colour.
TRANSFER_COLOURS = ("blue", "red", "yellow")


def transfer_category_names(spec: ShapesWorldSpec) -> List[str]:
    """The transfer dataset's categories in id order (a subset of the world's, reordered)."""
    return [
        f"{c} {s}"
        for c in TRANSFER_COLOURS
        if c in spec.colours
        for s in (*spec.shapes, *spec.concept_shapes)
    ]


def generate_transfer_split(root: str, num_images: int) -> str:
    """
    Write ``root/annotations/transfer.json`` and its images for the world already under
    ``root`` (its spec and category frequencies are read from ``train.json``). Scenes are
    drawn like val's (every category of the world, uniformly) from a stream of their own;
    only the transfer vocabulary's objects are annotated, exhaustively (every vocabulary
    category absent from an image is in its ``neg_category_ids``). A category keeps the
    world's frequency and ``novel_kind``, so APr is still the novel categories' AP.

    Returns:
        the json's path.
    """
    train_json = os.path.join(root, "annotations", "train.json")
    spec = spec_from_json(train_json)
    with open(train_json, encoding="utf-8") as f:
        world_categories = {c["name"]: c for c in json.load(f)["categories"]}
    names = category_names(spec)
    vocabulary = transfer_category_names(spec)
    new_id = {names.index(n) + 1: k + 1 for k, n in enumerate(vocabulary)}
    rng = np.random.default_rng([spec.seed, 2])  # independent of train/val
    images, all_anns = _render_split(rng, spec, num_images, root, "transfer")
    anns = []
    for a in all_anns:
        if a["category_id"] in new_id:
            anns.append({**a, "id": len(anns) + 1, "category_id": new_id[a["category_id"]]})
    shown = {}
    for a in anns:
        shown.setdefault(a["image_id"], set()).add(a["category_id"])
    for img in images:
        img["neg_category_ids"] = [
            c for c in range(1, len(vocabulary) + 1) if c not in shown.get(img["id"], set())
        ]
        img["not_exhaustive_category_ids"] = []
    categories = []
    for k, name in enumerate(vocabulary):
        cat_anns = [a for a in anns if a["category_id"] == k + 1]
        categories.append(
            {
                **world_categories[name],
                "id": k + 1,
                "instance_count": len(cat_anns),
                "image_count": len({a["image_id"] for a in cat_anns}),
            }
        )
    data = {
        "info": {
            "description": (
                f"shapes world v{spec.version} (transfer: {len(vocabulary)} categories of "
                f"colours {', '.join(TRANSFER_COLOURS)}), seed {spec.seed}"
            ),
            "spec": asdict(spec),
        },
        "licenses": [{"id": 1, "name": "CC0", "url": ""}],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }
    path = os.path.join(root, "annotations", "transfer.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return path


def generate_shapes_world(root: str, spec: ShapesWorldSpec = ShapesWorldSpec()) -> Dict[str, str]:
    """
    Write the dataset under ``root`` (see the module docstring for the layout).

    Returns:
        dict: split name -> path of its LVIS-format json.
    """
    rng = np.random.default_rng(spec.seed)
    names = category_names(spec)
    splits = {}
    train = _render_split(rng, spec, spec.num_train, root, "train")
    val = _render_split(rng, spec, spec.num_val, root, "val")
    kinds = novel_kinds(spec)
    freq = _frequencies(train[1], len(names), sorted(kinds))
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for split, (images, anns) in (("train", train), ("val", val)):
        counts = [0] * len(names)
        image_sets = [set() for _ in names]
        for a in anns:
            counts[a["category_id"] - 1] += 1
            image_sets[a["category_id"] - 1].add(a["image_id"])
        categories = [
            {
                "id": i + 1,
                "name": name,
                "synset": name.replace(" ", "_") + ".n.01",
                "synonyms": [name],
                "def": f"a {name} drawn on a textured background",
                "frequency": freq[i],
                "novel_kind": kinds.get(i, ""),  # "compositional" / "concept" for novel categories
                "instance_count": counts[i],
                "image_count": len(image_sets[i]),
            }
            for i, name in enumerate(names)
        ]
        data = {
            "info": {
                "description": f"shapes world v{spec.version} ({split}), seed {spec.seed}",
                "designed_novel": [names[i] for i in designed_novel_ids(spec)],
                "concept_novel": [names[i] for i in concept_novel_ids(spec)],
                "spec": asdict(spec),
            },
            "licenses": [{"id": 1, "name": "CC0", "url": ""}],
            "images": images,
            "annotations": anns,
            "categories": categories,
        }
        path = os.path.join(root, "annotations", f"{split}.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        splits[split] = path
    return splits
