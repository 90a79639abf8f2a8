"""Opening images the same way everywhere: EXIF orientation applied, RGB, errors that name the file.

An image source is a path, or a `datasets.Image(decode=False)` value `{"bytes": ..., "path": ...}`.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image, ImageOps

from image_processing.image_inputs import to_8bit_pil

__all__ = ["ImageSource", "check_images", "image_size", "open_image"]

ImageSource = str | os.PathLike | dict[str, Any]

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotations by 90 or 270 degrees swap width and height


def open_image(source: ImageSource, description: str | None = None) -> Image.Image:
    """Opens and fully decodes an image, applies its EXIF orientation and converts it to 8-bit RGB.

    16-bit and float images keep their full range (`image_processing.image_inputs.to_8bit_pil`, the processor's
    own rule), instead of being clipped at 255.

    Args:
        source: A file path or a `{"bytes", "path"}` dict.
        description: What to call the image in error messages (default: its path).

    Raises:
        ValueError: If the file is missing, unreadable or truncated; the message names it.
    """
    try:
        with _open(source) as image:
            image.load()
            return to_8bit_pil(ImageOps.exif_transpose(image)).convert("RGB")
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ValueError(f"Cannot read image {description or _name(source)}: {error}") from error


def image_size(source: ImageSource, verify: bool = False) -> tuple[int, int]:
    """Width and height after EXIF orientation, from the file header (or a full decode if `verify`).

    A full decode is what detects truncated files; JPEGs are decoded at reduced scale (`draft`), which still
    reads every byte of the compressed stream but is several times faster.

    Raises:
        ValueError: If the file is missing, not an image, or (with `verify`) truncated or corrupt.
    """
    try:
        with _open(source) as image:
            width, height = image.size
            orientation = _orientation(image)
            if verify:
                image.draft("RGB", (max(width // 8, 1), max(height // 8, 1)))
                image.load()
    except Exception as error:
        raise ValueError(f"Cannot read image {_name(source)}: {error}") from error
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def check_images(
    sources: Iterable[ImageSource], verify: bool, num_threads: int | None = None
) -> Iterator[tuple[int, int] | ValueError]:
    """`image_size` over many images in a thread pool (PIL decodes without the GIL), in input order.

    Yields:
        `(width, height)` for a readable image, the `ValueError` for an unreadable one.
    """

    def size_or_error(source: ImageSource) -> tuple[int, int] | ValueError:
        try:
            return image_size(source, verify)
        except ValueError as error:
            return error

    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # In chunks: `pool.map` consumes its whole input at once, and sources may hold image bytes.
        iterator = iter(sources)
        while chunk := list(itertools.islice(iterator, 256)):
            yield from pool.map(size_or_error, chunk)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) without decoding pixels.

    A PNG's `getexif()` decodes the whole image to look for an eXIf chunk after the pixel data; here only a
    chunk before it counts. `DetectionTransform` re-checks the size of every decoded image, so a late chunk
    that rotates the image is still caught, by name.
    """
    if image.format == "PNG":
        if "exif" not in image.info:
            return 1
        exif = Image.Exif()
        exif.load(image.info["exif"])
        return exif.get(_EXIF_ORIENTATION, 1)
    return image.getexif().get(_EXIF_ORIENTATION, 1)


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            return Image.open(io.BytesIO(source["bytes"]))
        source = source.get("path")
        if source is None:
            raise ValueError("the image entry has neither bytes nor a path")
    return Image.open(source)


def _name(source: ImageSource) -> str:
    if isinstance(source, dict):
        return str(source.get("path") or "<image bytes>")
    return os.fspath(source)
