"""Output sizes of the resize step and validation of `size` dicts: the one place with DETR's 800/1333 default.

Only sibling imports and third-party packages: copied next to Hub checkpoints for `trust_remote_code`.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "MAX_EDGE",
    "ACCEPTED_SIZES",
    "DEFAULT_LONGEST_EDGE",
    "DEFAULT_SHORTEST_EDGE",
    "default_size",
    "get_output_image_size",
    "get_size_with_aspect_ratio",
    "validate_pad_size",
    "validate_size",
]

# The original DETR's evaluation size: shortest edge 800, longest edge at most 1333.
DEFAULT_SHORTEST_EDGE = 800
DEFAULT_LONGEST_EDGE = 1333
# No size value may exceed this: a 16384 x 16384 float image is already 3 GiB, and a larger value is a typo that
# would otherwise fail deep inside the allocator.
MAX_EDGE = 16384

ACCEPTED_SIZES = (
    '{"shortest_edge", "longest_edge"}, {"shortest_edge"}, {"longest_edge"}, {"height", "width"} or '
    '{"max_height", "max_width"}'
)
_SIZE_KEY_SETS = (
    {"shortest_edge", "longest_edge"},
    {"shortest_edge"},
    {"longest_edge"},
    {"height", "width"},
    {"max_height", "max_width"},
)


def default_size() -> dict[str, int]:
    """`{"shortest_edge": 800, "longest_edge": 1333}`, a new dict each call."""
    return {"shortest_edge": DEFAULT_SHORTEST_EDGE, "longest_edge": DEFAULT_LONGEST_EDGE}


def get_size_with_aspect_ratio(
    height: int, width: int, shortest_edge: int, longest_edge: int | None = None
) -> tuple[int, int]:
    """Output `(height, width)` for a shortest-edge resize with an optional cap on the longest edge.

    Equal to transformers' `get_size_with_aspect_ratio` whenever that one respects the cap (it computes the long
    side from the unrounded short side, unlike the original DETR which can exceed the cap by a few pixels). Where
    transformers returns an image unchanged although its long side exceeds the cap (e.g. 100 x 1335 for 800/1333),
    the long side is brought down to the cap. Sides are at least 1 pixel.
    """
    short, long = min(height, width), max(height, width)
    target_short: int = shortest_edge
    unrounded_short: float = float(shortest_edge)
    capped = longest_edge is not None and long / short * shortest_edge > longest_edge
    if capped:
        unrounded_short = longest_edge * short / long
        target_short = int(round(unrounded_short))
    if short == target_short and not (capped and long > longest_edge):
        return height, width
    new_short = max(target_short, 1)
    new_long = max(int(unrounded_short * long / short), 1)
    return (new_long, new_short) if width < height else (new_short, new_long)


def get_output_image_size(height: int, width: int, size: Mapping[str, int]) -> tuple[int, int]:
    """Output `(height, width)` of the resize step for a validated `size` dict (see `ACCEPTED_SIZES`).

    - `{"shortest_edge", "longest_edge"}` / `{"shortest_edge"}`: `get_size_with_aspect_ratio`;
    - `{"longest_edge"}`: the longest side becomes `longest_edge`, aspect ratio kept (transformers' convention);
    - `{"max_height", "max_width"}`: the largest size within both limits, aspect ratio kept;
    - `{"height", "width"}`: exactly that size.
    """
    if "shortest_edge" in size:
        return get_size_with_aspect_ratio(height, width, size["shortest_edge"], size.get("longest_edge"))
    if "longest_edge" in size:
        long = size["longest_edge"]
        short = max(int(min(height, width) * long / max(height, width)), 1)
        return (long, short) if height >= width else (short, long)
    if "max_height" in size:
        scale = min(size["max_height"] / height, size["max_width"] / width)  # transformers' arithmetic
        return max(int(height * scale), 1), max(int(width * scale), 1)
    return size["height"], size["width"]


def validate_size(size: Any, max_size: int | None = None, name: str = "size") -> dict[str, int]:
    """Returns `size` as a dict with one of the accepted key sets; an int is a shortest edge (legacy configs)."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = {"shortest_edge": size, "longest_edge": max_size or DEFAULT_LONGEST_EDGE}
    if not isinstance(size, Mapping):
        raise TypeError(f"`{name}` must be a dict with keys {ACCEPTED_SIZES}; got {size!r}.")
    size = {key: value for key, value in size.items() if value is not None}
    if set(size) not in _SIZE_KEY_SETS:
        raise ValueError(f"`{name}` must have keys {ACCEPTED_SIZES}; got {sorted(size)}.")
    for key, value in size.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}[{key!r}]` must be a positive int; got {value!r}.")
        if value > MAX_EDGE:
            raise ValueError(f"`{name}[{key!r}]` = {value} px is larger than {MAX_EDGE} px (an image size in pixels).")
    return {key: int(value) for key, value in size.items()}


def validate_pad_size(pad_size: Any) -> dict[str, int] | None:
    if pad_size is None:
        return None
    keys = {key for key, value in pad_size.items() if value is not None} if isinstance(pad_size, Mapping) else None
    if keys != {"height", "width"}:
        raise ValueError(f'`pad_size` must be None or a dict {{"height": int, "width": int}}; got {pad_size!r}.')
    return validate_size({"height": pad_size["height"], "width": pad_size["width"]}, name="pad_size")
