"""
Generate "shapes world": a synthetic open-vocabulary detection dataset in LVIS v1 json
format.

Each category is a colour x shape combination ("red triangle"; 6 x 6 by default). Images
hold several objects of varied size, rotation and colour tint on a textured background
(gradients, stripes, checks, blotches); later objects may hide part of earlier ones, and
masks are the exact visible parts (polygons, from shapely). The training split is
long-tailed like LVIS: base categories follow a Zipf law, and ``num_novel`` categories,
chosen so that every colour and every shape also occurs in base categories
(compositional novelty), appear in only a few training images. Categories carry an LVIS
frequency ("r"/"c"/"f") from their number of training images (ranked, split in LVIS v1's
proportions), so with enough images the designed novel categories are exactly the rare
ones: absent from the base training set (``shapes_world_train_ov``), present in val,
where categories are uniform. Deterministic for a given seed.

Layout written under ``root``:
    root/train/000001.png ...            root/val/000001.png ...
    root/annotations/train.json          root/annotations/val.json
"""

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from shapely.geometry import Polygon
from shapely.geometry import box as shapely_box

__all__ = [
    "SHAPES", "COLOURS", "ShapesWorldSpec", "generate_shapes_world", "category_names",
    "designed_novel_ids", "render_scene", "scene_categories", "spec_from_json",
]

# name -> vertices of the unit shape (radius 1, centred at 0), as (x, y) pairs.
SHAPES: Dict[str, List[Tuple[float, float]]] = {
    "circle": [(math.cos(2 * math.pi * k / 32), math.sin(2 * math.pi * k / 32)) for k in range(32)],
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)],
    "star": [
        ((1.0 if k % 2 == 0 else 0.45) * math.sin(math.pi * k / 5),
         -(1.0 if k % 2 == 0 else 0.45) * math.cos(math.pi * k / 5))
        for k in range(10)
    ],
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
              (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "hexagon": [(math.cos(math.pi * k / 3), math.sin(math.pi * k / 3)) for k in range(6)],
}

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
    max_occlusion: float = 0.35  # at most this fraction of an object hidden by later ones; 0: none touch
    textured: bool = True  # textured backgrounds (else flat colour + noise)
    num_novel: int = 10  # designed-rare categories (LVIS: 337 of 1203 are rare, ~10 of 36)
    novel_train_images: Tuple[int, int] = (1, 3)  # training images of each designed-rare category
    base_zipf: float = 0.8  # base categories' training frequency ~ rank^-base_zipf
    shapes: Sequence[str] = tuple(SHAPES)
    colours: Sequence[str] = tuple(COLOURS)


def spec_from_json(json_file: str) -> ShapesWorldSpec:
    """The spec a shapes-world json was generated with (kept in its ``info``)."""
    with open(json_file, encoding="utf-8") as f:
        fields = json.load(f).get("info", {}).get("spec")
    if fields is None:
        raise ValueError(f"{json_file}: no generator spec in its 'info' (not a shapes-world json?)")
    return ShapesWorldSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def category_names(spec: ShapesWorldSpec) -> List[str]:
    """Category names in id order (id = index + 1): every colour x shape pair."""
    return [f"{c} {s}" for s in spec.shapes for c in spec.colours]


def designed_novel_ids(spec: ShapesWorldSpec) -> List[int]:
    """
    Indices (into :func:`category_names`) of the categories made rare in training: at most
    ceil(num_novel / #shapes) per shape and per colour, so each shape and colour is also
    seen in base categories.
    """
    n_shapes, n_colours = len(spec.shapes), len(spec.colours)
    per = math.ceil(spec.num_novel / n_shapes) if spec.num_novel else 0
    if spec.num_novel and (per >= n_colours or per * math.ceil(n_shapes / n_colours) >= n_shapes):
        raise ValueError(f"num_novel={spec.num_novel} leaves some shape or colour without a base category")
    rng = np.random.default_rng([spec.seed, 1])  # independent of the rendering stream
    shape_order, colour_order = rng.permutation(n_shapes), rng.permutation(n_colours)
    step = n_colours // per if per else 1
    return sorted(int(shape_order[n % n_shapes] * n_colours + colour_order[(n % n_shapes + (n // n_shapes) * step) % n_colours])
                  for n in range(spec.num_novel))


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
            pattern = 0.5 * np.sign(np.sin(2 * math.pi * freq * xx) * np.sin(2 * math.pi * freq * yy))
        else:
            coarse = rng.uniform(-0.5, 0.5, size=(max(2, size // 16),) * 2)
            pattern = np.asarray(Image.fromarray(coarse.astype(np.float32)).resize((size, size), Image.BILINEAR))
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
        ``polygons`` (flat XY lists of the visible parts), ``bbox`` (XYWH of the visible
        part) and ``area`` (visible, pixels)). Objects that find no place are skipped.
    """
    size = spec.image_size
    names = category_names(spec)
    img = _background(rng, size, spec.textured)
    draw = ImageDraw.Draw(img)
    placed = []  # [category, full polygon, full area, visible geometry]
    frame = shapely_box(0, 0, size, size)  # vertices on the border may pass it by rounding
    for cat in categories:
        for _ in range(30):  # rejection sampling of a placement that hides no one too much
            r = float(rng.uniform(*spec.object_size))
            cx, cy = rng.uniform(r, size - r, size=2)
            colour, shape = names[cat].split(" ")
            flat = _polygon(shape, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
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
                placed.append([cat, poly, poly.area, poly])
                break
    objects = []
    for cat, _, _, visible in placed:
        parts = _parts(visible)
        if not parts:
            continue
        x0 = min(p.bounds[0] for p in parts)
        y0 = min(p.bounds[1] for p in parts)
        x1 = max(p.bounds[2] for p in parts)
        y1 = max(p.bounds[3] for p in parts)
        objects.append({
            "category": int(cat),
            "polygons": [[round(v, 2) for xy in list(p.exterior.coords)[:-1] for v in xy] for p in parts],
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": float(sum(p.area for p in parts)),
        })
    return img, objects


def scene_categories(rng, spec: ShapesWorldSpec, num_images: int, long_tailed: bool) -> List[List[int]]:
    """
    Per image, the categories of its objects (indices into :func:`category_names`):
    long-tailed with the designed-novel ones rare (the training split), or uniform.
    """
    k = len(category_names(spec))
    counts = rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1, size=num_images)
    if not long_tailed:
        return [rng.integers(k, size=n).tolist() for n in counts]
    novel = designed_novel_ids(spec)
    base = np.array([c for c in range(k) if c not in novel])
    weights = (rng.permutation(len(base)) + 1.0) ** -spec.base_zipf
    per_image = [rng.choice(base, size=n, p=weights / weights.sum()).tolist() for n in counts]
    taken = set()
    for cat in novel:
        lo, hi = spec.novel_train_images
        for i in rng.permutation(num_images)[: int(rng.integers(lo, hi + 1))]:
            j = int(rng.integers(len(per_image[i])))
            if (int(i), j) not in taken:
                per_image[i][j] = cat
                taken.add((int(i), j))
    return per_image


def _render_split(rng, spec: ShapesWorldSpec, num_images: int, root: str, split: str) -> Tuple[List[dict], List[dict]]:
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for image_id, cats in enumerate(scene_categories(rng, spec, num_images, split == "train"), start=1):
        img, objects = render_scene(rng, spec, cats)
        for obj in objects:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category"] + 1,
                "bbox": obj["bbox"],
                "area": obj["area"],
                "segmentation": obj["polygons"],
            })
        file_name = f"{split}/{image_id:06d}.png"
        img.save(os.path.join(root, file_name))
        images.append({
            "id": image_id,
            "file_name": file_name,
            "height": spec.image_size,
            "width": spec.image_size,
            "license": 1,
            "flickr_url": "",
            "coco_url": "",
            "date_captured": "",
            "neg_category_ids": [],
            "not_exhaustive_category_ids": [],
        })
    return images, annotations


# LVIS v1 train: 337 rare, 461 common, 405 frequent categories of 1203.
LVIS_FREQUENCY_SHARES = (("r", 337 / 1203), ("c", 461 / 1203), ("f", 405 / 1203))


def _frequencies(train_anns: List[dict], num_cats: int) -> List[str]:
    """
    LVIS frequency per category from its number of training images: the categories are
    ranked by that count (ties by id) and split in LVIS v1's r/c/f proportions. LVIS's
    absolute thresholds (10 and 100 images of ~100k) mean nothing for a small dataset.
    """
    image_sets = [set() for _ in range(num_cats)]
    for ann in train_anns:
        image_sets[ann["category_id"] - 1].add(ann["image_id"])
    order = sorted(range(num_cats), key=lambda i: (len(image_sets[i]), i))
    out = [""] * num_cats
    start = 0
    for k, (freq, share) in enumerate(LVIS_FREQUENCY_SHARES):
        stop = num_cats if k == len(LVIS_FREQUENCY_SHARES) - 1 else start + round(share * num_cats)
        for i in order[start:stop]:
            out[i] = freq
        start = stop
    return out


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
    freq = _frequencies(train[1], len(names))
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
                "instance_count": counts[i],
                "image_count": len(image_sets[i]),
            }
            for i, name in enumerate(names)
        ]
        data = {
            "info": {"description": f"shapes world ({split}), seed {spec.seed}",
                     "designed_novel": [names[i] for i in designed_novel_ids(spec)],
                     "spec": asdict(spec)},
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
