"""
Reading an image file as vild_d2 does everywhere (training and test mappers, the demo,
the detector, the region tool, the evaluations): detectron2's ``read_image`` (EXIF
orientation, ``format``) for images of more than 8 bits per pixel too.

detectron2's ``read_image`` converts with PIL's ``Image.convert("RGB")``, which clips a
16-bit image's values (PIL modes ``I;16*`` and ``I``, e.g. a 16-bit grey PNG) to 255: the
picture comes out all white and the detector sees nothing, without an error. vild_d2's
:func:`read_image` scales 16-bit pixels to 8 bits first and refuses in one line the modes
that have no 8-bit reading (float or 32-bit pixels). detectron2 itself is left as it is.
"""

import numpy as np
from detectron2.data import detection_utils
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..errors import VildD2Error

__all__ = ["UnsupportedImageError", "to_eight_bit", "image_mode_problem", "read_image"]

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # "I": how older Pillow opens them
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "RGBX", "La")


class UnsupportedImageError(VildD2Error, ValueError):
    """An image whose pixels have no faithful 8-bit reading; names the file."""


def image_mode_problem(image: Image.Image) -> str:
    """Why ``image`` cannot be read as 8-bit RGB ("" if it can), from its mode alone."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode in EIGHT_BIT_MODES:
        return ""
    return f"PIL mode {image.mode} (float or 32-bit pixels) has no 8-bit reading"


def to_eight_bit(image: Image.Image, name: str = "image") -> Image.Image:
    """
    ``image`` with 16-bit pixels (0 ... 65535) scaled to 8 bits (/ 257, rounded) as a grey
    "L" image; 8-bit images unchanged. UnsupportedImageError naming ``name`` otherwise.
    """
    problem = image_mode_problem(image)
    if problem:
        raise UnsupportedImageError(f"{name}: {problem}; convert it to 8 or 16 bits per channel")
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    pixels = np.asarray(image).astype(np.float64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise UnsupportedImageError(
            f"{name}: PIL mode {image.mode} with values {pixels.min():.0f} ... {pixels.max():.0f},"
            " outside the 16-bit range 0 ... 65535"
        )
    return Image.fromarray(np.round(pixels / 257.0).astype(np.uint8), mode="L")


def read_image(file_name: str, format=None) -> np.ndarray:
    """
    The image of ``file_name`` as an [H, W, C] uint8 array (C = 3, or 1 for ``format`` "L"),
    in ``format`` as detectron2's ``read_image`` takes it ("RGB", "BGR", "L", ... or None:
    PIL's own), EXIF orientation applied; 16-bit pixels scaled to 8 bits.
    """
    with PathManager.open(file_name, "rb") as f:
        image = detection_utils._apply_exif_orientation(Image.open(f))
        return detection_utils.convert_PIL_to_numpy(to_eight_bit(image, file_name), format)
