"""
Images of more than 8 bits per pixel, read as detectron2 reads every image.

detectron2's ``read_image`` converts with PIL's ``Image.convert("RGB")``, which clips a
16-bit image's values (PIL modes ``I;16*`` and ``I``, e.g. a 16-bit grey PNG) to 255: the
picture comes out all white and the detector sees nothing, without an error.
:func:`install` makes ``detectron2.data.detection_utils.read_image`` (which training, the
inference CLI and the region tool all call) scale 16-bit pixels to 8 bits first, and refuse
in one line the modes that have no 8-bit reading (float or 32-bit pixels).
"""

import numpy as np
from PIL import Image

__all__ = ["UnsupportedImageError", "to_eight_bit", "image_mode_problem", "install"]

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # "I": how older Pillow opens them
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "RGBX", "La")


class UnsupportedImageError(ValueError):
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


def install() -> None:
    """Make detectron2's ``read_image`` use :func:`to_eight_bit` (idempotent)."""
    from detectron2.data import detection_utils
    from detectron2.utils.file_io import PathManager

    if getattr(detection_utils.read_image, "vild_d2_eight_bit", False):
        return

    def read_image(file_name, format=None):
        """detectron2's ``read_image`` (EXIF orientation, ``format``) for 16-bit images too."""
        with PathManager.open(file_name, "rb") as f:
            image = detection_utils._apply_exif_orientation(Image.open(f))
            return detection_utils.convert_PIL_to_numpy(to_eight_bit(image, file_name), format)

    read_image.vild_d2_eight_bit = True
    detection_utils.read_image = read_image
