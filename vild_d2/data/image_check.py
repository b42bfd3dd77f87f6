"""
Check every training image before the first iteration: a missing or unreadable image, or
one whose size is not the annotation's, otherwise crashes training from a data-loader
worker hours in (detectron2 reads images lazily). Header-level (PIL opens the file and
reads its size and pixel format, not its pixels) unless ``decode`` (every pixel read: a
truncated file is found too, as the inference CLI wants before it writes anything), in
parallel threads; all bad files are reported at once.
A passed check is cached under ``cache_dir`` keyed by the file list with each file's
size and modification time, so a re-run over unchanged files is instant.
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence

from PIL import Image
from tqdm import tqdm

from ..errors import VildD2Error
from ..utils.atomic_io import atomic_write_json
from .images import image_mode_problem

__all__ = ["ImageCheckError", "check_images"]

MAX_LISTED = 10  # bad files named in the error (the total is always given)


class ImageCheckError(VildD2Error, RuntimeError):
    """Some training images cannot be used; names them (up to MAX_LISTED) and counts all."""


def _problem(d: dict, decode: bool = False) -> Optional[str]:
    path = d["file_name"]
    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = image_mode_problem(im)
            if decode and not mode:
                im.load()
    except FileNotFoundError:
        return "missing"
    except Exception as e:  # PIL raises many kinds for a file that is not an image
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"not a readable image ({type(e).__name__}{': ' + reason if reason else ''})"
    if mode:
        return mode
    if ("height" in d and d["height"] != height) or ("width" in d and d["width"] != width):
        # detectron2 would transpose an EXIF-rotated image; the dict must still say the stored size
        return f"is {width}x{height} but its annotation says {d.get('width')}x{d.get('height')}"
    return None


def _key(dataset_dicts: Sequence[dict]) -> str:
    h = hashlib.sha1()
    for d in dataset_dicts:
        path = d["file_name"]
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "absent"
        h.update(f"{path}\0{d.get('height')}\0{d.get('width')}\0{stamp}\n".encode())
    return h.hexdigest()[:20]


def check_images(
    dataset_dicts: Sequence[dict],
    cache_dir: Optional[str] = None,
    workers: int = 8,
    what: str = "training images",
    decode: bool = False,
) -> int:
    """
    Raise :class:`ImageCheckError` if any image of ``dataset_dicts`` is missing,
    unreadable (with ``decode``: any of its pixels), of a pixel format without an 8-bit
    reading, or not of its dict's ``height``/``width``.

    Returns:
        the number of images checked (0 when a cached pass matched).
    """
    key = _key(dataset_dicts) + ("-decoded" if decode else "")
    stamp = os.path.join(cache_dir, f"image_check.{key}.json") if cache_dir else None
    if stamp and os.path.isfile(stamp):
        return 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(
            tqdm(
                pool.map(lambda d: _problem(d, decode), dataset_dicts),
                total=len(dataset_dicts),
                desc=f"checking {what}",
                unit="image",
                disable=None if len(dataset_dicts) > 1000 else True,
            )
        )
    bad: List[str] = [f"{d['file_name']} ({p})" for d, p in zip(dataset_dicts, problems) if p]
    if bad:
        listed = "; ".join(bad[:MAX_LISTED]) + ("; ..." if len(bad) > MAX_LISTED else "")
        raise ImageCheckError(f"{len(bad)} of {len(dataset_dicts)} {what} cannot be used: {listed}")
    if stamp:
        os.makedirs(cache_dir, exist_ok=True)
        atomic_write_json(stamp, {"images": len(dataset_dicts), "key": key})
    return len(dataset_dicts)
