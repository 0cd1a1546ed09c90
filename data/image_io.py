"""Reading one photo or one id map (label, instance) from a file, refusing what would be read wrongly.

    image = read_photo(path)                  # PIL RGB, 8 bits; 16-bit grayscale scaled by 255 / 65535
    ids = read_map(path, "label")             # int array [H, W], exact values (16/32-bit kept)

Photos may be any format PIL reads. A 16-bit grayscale photo (mode ``I;16*``, or ``I`` with
values up to 65535) becomes 8-bit as ``round(v * 255 / 65535)``: PIL's own ``convert("RGB")``
clips at 255, which whitens nearly every pixel of such a photo (16-bit RGB PNGs PIL already
opens as 8-bit RGB, keeping each value's high byte). Id maps are never rescaled
(Cityscapes instance ids such as 26001 must stay exact) and must be stored losslessly: JPEG
moves ids at region borders (about 3 % of the pixels of a 64x64 test map) and WebP decodes as
RGB (lossy by default), so both are refused by name and by content.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# How every error about one sample ends: the CLI flag and the keyword of build_dataset.
SKIP_HINT = "or pass --skip-invalid (Python: skip_invalid=True) to leave such samples out"
LOSSY_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WebP"}
MAP_MODES = "L, P, I or I;16"
UINT16_MAX = 65535


def lossy_format(image: Image.Image) -> str | None:
    """Name of the lossy (or RGB-only) format of an opened file, None for a lossless one."""
    if image.format in ("JPEG", "MPO"):
        return "JPEG"
    if image.format == "WEBP":
        return "WebP"
    if image.format == "TIFF" and image.info.get("compression") in ("jpeg", "tiff_jpeg"):
        return "JPEG-compressed TIFF"
    return None


def lossy_map_error(path: Path, what: str, found: str) -> ValueError:
    return ValueError(f"{what} {path} is a {found} file; expected a lossless format (PNG): {found} changes ids "
                      f"at region borders, so label and instance maps must be lossless. Re-export it as PNG "
                      f"from the original ids (converting this file keeps the damage), {SKIP_HINT}")


def check_map_file(path: Path, what: str) -> None:
    """ValueError when ``path`` cannot hold an id map exactly, judged from its name (and a TIFF's
    header, whose compression may be JPEG), without decoding it."""
    suffix = path.suffix.lower()
    found = LOSSY_SUFFIXES.get(suffix)
    if found is None and suffix in (".tif", ".tiff"):
        try:
            with Image.open(path) as image:
                found = lossy_format(image)
        except Exception:  # unreadable: reported with the reason when the sample is read
            return
    if found is not None:
        raise lossy_map_error(path, what, found)


def open_image(path: Path, what: str, decode: bool = True) -> Image.Image:
    """Open (and by default fully decode) an image file, or raise ValueError naming it."""
    try:
        image = Image.open(path)
        if decode:
            image.load()
    except FileNotFoundError:
        raise
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        raise ValueError(f"cannot read {what} {path}: {error}; expected a readable image file "
                         f"(re-export or remove it, {SKIP_HINT})") from error
    return image


def read_map(path: Path, what: str) -> np.ndarray:
    """Integer ids [H, W] of a single-channel lossless image, values exactly as stored."""
    image = open_image(path, what)
    found = lossy_format(image)
    if found is not None:
        raise lossy_map_error(path, what, found)
    array = np.asarray(image)
    if array.ndim != 2 or array.dtype.kind not in "iub":
        raise ValueError(f"{what} {path} has mode {image.mode} (shape {array.shape}, {array.dtype}); "
                         f"expected a single-channel image of integer ids (mode {MAP_MODES})")
    return array.astype(np.uint8) if array.dtype == bool else array


def read_photo(path: Path, decode: bool = True) -> Image.Image:
    """The photo as an 8-bit RGB image; with ``decode=False`` only its header (for the size)."""
    image = open_image(path, "image", decode)
    if image.mode == "F":
        raise ValueError(f"image {path} has mode F (32-bit float pixels, range unknown); expected an 8- or "
                         f"16-bit photo: save it as 8- or 16-bit PNG, {SKIP_HINT}")
    if not decode:
        return image
    if image.mode == "I" or image.mode.startswith("I;16"):
        return Image.fromarray(_gray16_to_8bit(np.asarray(image), path, image.mode)).convert("RGB")
    return image.convert("RGB")


def _gray16_to_8bit(array: np.ndarray, path: Path, mode: str) -> np.ndarray:
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > UINT16_MAX:
        raise ValueError(f"image {path} (mode {mode}) has values {low}..{high}; expected a 16-bit photo with "
                         f"values 0..{UINT16_MAX}: save it as 8- or 16-bit PNG, {SKIP_HINT}")
    return ((array.astype(np.uint32) * 255 + UINT16_MAX // 2) // UINT16_MAX).astype(np.uint8)


def check_size(path: Path, size: tuple[int, int], image_path: Path, image_size: tuple[int, int], what: str):
    if size != image_size:
        raise ValueError(f"{what} {path} is {size[0]}x{size[1]} (WxH) but its image {image_path} is "
                         f"{image_size[0]}x{image_size[1]}; expected the same size (re-export one of them, "
                         f"{SKIP_HINT})")
