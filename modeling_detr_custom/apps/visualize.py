"""Drawing detections and segments on images with PIL: distinct colours, label names and scores.

    image = draw_detections(image, detections)   # detections: [{"label", "label_id", "score", "box"}]
    image = draw_segments(image, segments)       # segments: [{"label", "score", "mask"}]
    image.save("out.png")

`detections` is what `modeling_detr_custom.predict` returns per image (and what `pipeline("object-detection")`
returns, with `box` as a dict; both box forms are accepted). `segments` is what `pipeline("image-segmentation")`
returns per image (`mask` a PIL image of 0/255) and what `apps.predict` returns for `--task panoptic|instance`
(`mask` a bool array): a semi-transparent colour per segment.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["class_colour", "draw_detections", "draw_segments", "segment_mask"]

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def class_colour(label_id: int) -> tuple[int, int, int]:
    """A saturated RGB colour for a class; consecutive ids get far-apart hues (golden-ratio hue steps).

    Args:
        label_id: The contiguous class id (the model's label).

    Returns:
        `(r, g, b)` in 0..255; the same id always gets the same colour.
    """
    if isinstance(label_id, bool) or not isinstance(label_id, int) or label_id < 0:
        raise ValueError(f"label_id must be a non-negative int; got {label_id!r}.")
    hue = (0.03 + label_id * _GOLDEN_RATIO_CONJUGATE) % 1.0
    value = 0.95 if label_id % 2 == 0 else 0.8  # alternate brightness so near hues still differ
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def draw_detections(
    image: Image.Image,
    detections: Sequence[Mapping[str, Any]],
    line_width: int | None = None,
    font_size: int | None = None,
    scale: float = 1.0,
    labels: bool = True,
    empty_note: str = "no detections",
) -> Image.Image:
    """Draws each detection's box and a `"label 0.87"` tag in its class colour on a copy of `image`; an image
    without detections gets a "no detections" note in its top-left corner.

    Args:
        image: The image the boxes refer to (pixel coordinates).
        detections: Dicts with `box` (`[x0, y0, x1, y1]` or `{"xmin", "ymin", "xmax", "ymax"}`), `score`,
            `label` (name) and optionally `label_id` (colour key; default: a stable id derived from the name).
        line_width: Box outline width in pixels of the output; default scales with the image (at least 2).
        font_size: Tag text size; default scales with the image (1/32 of its shortest side, at least 8).
        scale: Enlarge the image by this factor before drawing (boxes follow), so that tags on small images
            cover less of them; the output is `scale` times the size of `image`.
        labels: Draw the `"label 0.87"` tags (False: boxes only); a `score` of None (ground truth) tags the label
            alone.
        empty_note: What an image without detections says in its corner.

    Returns:
        A new RGB image; `image` is left untouched.

    Raises:
        ValueError: For a detection without a readable `box`, `score` or `label`, or a `scale` not above 0.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0; got {scale!r}.")
    canvas = image.convert("RGB")  # always a copy
    if scale != 1.0:
        size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
        canvas = canvas.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    shortest = min(canvas.size)
    line_width = line_width or max(2, round(shortest / 200))
    font = _font(font_size or max(8, round(shortest / 32)))
    for index, detection in enumerate(detections):
        x0, y0, x1, y1 = (value * scale for value in _box_xyxy(detection, index))
        colour = class_colour(_colour_key(detection, index))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line_width)
        if labels:
            score = detection["score"]
            tag = str(detection["label"]) if score is None else f"{detection['label']} {float(score):.2f}"
            _draw_tag(draw, tag, (x0, y0), colour, font, canvas.size)
    if not detections:
        _draw_tag(draw, empty_note, (0, 0), (40, 40, 40), font, canvas.size)
    return canvas


def segment_mask(segment: Mapping[str, Any], size: tuple[int, int], index: int = 0) -> np.ndarray:
    """The segment's `mask` as a `(height, width)` bool array.

    Raises:
        ValueError: no `mask`, or one of another size than the image (`size` = `(width, height)`).
    """
    mask = segment.get("mask")
    if mask is None:
        raise ValueError(f"segments[{index}] needs a 'mask' (PIL image or array); got keys {sorted(segment)}.")
    array = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask) > 0
    if array.shape != (size[1], size[0]):
        raise ValueError(
            f"segments[{index}]['mask'] is {array.shape[1]}x{array.shape[0]}, the image {size[0]}x{size[1]}."
        )
    return array


def draw_segments(
    image: Image.Image,
    segments: Sequence[Mapping[str, Any]],
    alpha: float = 0.5,
    scale: float = 1.0,
    labels: bool = True,
    empty_note: str = "no segments",
) -> Image.Image:
    """Blends each segment's pixels with a colour of its own (`alpha` of colour) and tags it with `"label 0.87"`
    at its centre; an image without segments gets `empty_note` in its corner.

    Args:
        image: The image the masks cover.
        segments: Dicts with `mask` (PIL image or `(height, width)` array, nonzero inside), `label` and `score`
            (None: the label alone, as semantic segmentation has no score).
        alpha: Opacity of the segment colours, in (0, 1].
        scale: Enlarge the output by this factor (nearest), so tags on small images cover less of them.
        labels: Draw the tags.

    Returns:
        A new RGB image `scale` times the size of `image`.

    Raises:
        ValueError: an `alpha` outside (0, 1], a `scale` not above 0, or a malformed segment (named by index).
    """
    if not 0 < alpha <= 1 or not scale > 0:
        raise ValueError(f"alpha must be in (0, 1] and scale > 0; got {alpha!r} and {scale!r}.")
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32)
    masks = [segment_mask(segment, image.size, index) for index, segment in enumerate(segments)]
    for index, mask in enumerate(masks):
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.asarray(class_colour(index), dtype=np.float32)
    drawn = Image.fromarray(canvas.round().astype(np.uint8))
    if scale != 1.0:
        drawn = drawn.resize((max(1, round(drawn.width * scale)), max(1, round(drawn.height * scale))))
    draw = ImageDraw.Draw(drawn)
    font = _font(max(8, round(min(drawn.size) / 24)))
    for index, (segment, mask) in enumerate(zip(segments, masks)):
        if not labels or not mask.any():
            continue
        rows, columns = np.nonzero(mask)
        score = segment.get("score")
        tag = str(segment.get("label")) if score is None else f"{segment.get('label')} {float(score):.2f}"
        corner = (float(np.median(columns)) * scale, float(np.median(rows)) * scale)
        _draw_tag(draw, tag, corner, class_colour(index), font, drawn.size)
    if not segments:
        _draw_tag(draw, empty_note, (0, 0), (40, 40, 40), font, drawn.size)
    return drawn


def _draw_tag(
    draw: ImageDraw.ImageDraw,
    text: str,
    corner: tuple[float, float],
    colour: tuple[int, int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    image_size: tuple[int, int],
) -> None:
    """A filled tag above the box's top-left corner (inside the box when there is no room above)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 4, bottom - top + 4
    x = min(max(corner[0], 0), max(image_size[0] - width, 0))
    y = corner[1] - height if corner[1] - height >= 0 else corner[1]
    draw.rectangle((x, y, x + width, y + height), fill=colour)
    draw.text((x + 2 - left, y + 2 - top), text, fill=_text_colour(colour), font=font)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # Pillow < 10.1 or without FreeType: the fixed-size bitmap font
        return ImageFont.load_default()


def _box_xyxy(detection: Mapping[str, Any], index: int) -> tuple[float, float, float, float]:
    box = detection.get("box")
    if isinstance(box, Mapping):
        box = [box.get(key) for key in ("xmin", "ymin", "xmax", "ymax")]
    try:
        x0, y0, x1, y1 = (float(value) for value in box)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"detections[{index}] needs a box [x0, y0, x1, y1] or {{'xmin', 'ymin', 'xmax', 'ymax'}}; got {box!r}."
        ) from err
    if "score" not in detection or "label" not in detection:
        raise ValueError(f"detections[{index}] needs 'score' and 'label'; got keys {sorted(detection)}.")
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _colour_key(detection: Mapping[str, Any], index: int) -> int:
    label_id = detection.get("label_id")
    if label_id is None:  # pipeline output has names only: a stable id from the name
        return sum(ord(char) * 31**position for position, char in enumerate(str(detection["label"]))) % 997
    if isinstance(label_id, bool) or not isinstance(label_id, int) or label_id < 0:
        raise ValueError(f"detections[{index}]['label_id'] must be a non-negative int; got {label_id!r}.")
    return label_id
