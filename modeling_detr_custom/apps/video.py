"""Video files for the apps: decoding frames and writing annotated videos with PyAV (FFmpeg's decoders in its wheel).

    for index, time_s, image in read_frames("clip.mp4", every_n_frames=5):
        ...
    with VideoWriter("out.mp4", fps=6.0) as writer:
        writer.write(image)

PyAV is in the `deploy` extra (`pip install -e '.[deploy]'`).
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image

__all__ = ["VIDEO_EXTENSIONS", "VideoWriter", "is_video", "read_frames", "video_fps"]

# Read as videos; a GIF is a video when it has more than one frame (a still GIF stays an image).
VIDEO_EXTENSIONS = frozenset({".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".webm"})
_DEFAULT_FPS = 10.0  # for containers that state no frame rate


def _av() -> Any:
    try:
        import av
    except ImportError as err:
        raise ValueError(
            "reading or writing video needs PyAV: pip install -e '.[deploy]' (or pip install av)."
        ) from err
    return av


def is_video(path: Path) -> bool:
    """Whether `path` is read as a video: a video extension, and for a GIF more than one frame."""
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        return False
    if suffix != ".gif":
        return True
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except Exception:  # unreadable: reported as an image that cannot be read
        return False


def video_fps(path: Path) -> float:
    """Frames per second of the first video stream (10 when the container states none)."""
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else _DEFAULT_FPS


def read_frames(path: Path, every_n_frames: int = 1) -> Iterator[tuple[int, float, Image.Image]]:
    """`(frame index, time in seconds, RGB image)` of every `every_n_frames`-th frame, from frame 0.

    Raises:
        ValueError: The file cannot be opened or decoded as a video (the message names it).
    """
    if every_n_frames < 1:
        raise ValueError(f"every_n_frames must be >= 1; got {every_n_frames}.")
    av = _av()
    try:
        container = av.open(str(path))
    except Exception as err:  # av.error.* for missing, unreadable or non-video files
        raise ValueError(f"Cannot read video {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise ValueError(f"Cannot read video {path}: it has no video stream.")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or _DEFAULT_FPS)
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every_n_frames == 0:
                    time_s = float(frame.time) if frame.time is not None else index / fps
                    yield index, round(time_s, 6), frame.to_image().convert("RGB")
        except av.error.FFmpegError as err:
            raise ValueError(f"Cannot decode video {path}: {err}") from err


class VideoWriter:
    """Writes RGB images as an MPEG-4 video (codec `mpeg4`, built into FFmpeg, so every PyAV wheel has it).

    The size is that of the first image, rounded down to even numbers (the yuv420p pixel format needs them);
    later images are scaled to it.

    Args:
        path: Output file (`.mp4`).
        fps: Frames per second.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1000) if fps > 0 else Fraction(_DEFAULT_FPS)
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0

    def write(self, image: Image.Image) -> None:
        av = _av()
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream("mpeg4", rate=self.fps)
            self._stream.width = max(2, image.width - image.width % 2)
            self._stream.height = max(2, image.height - image.height % 2)
            self._stream.pix_fmt = "yuv420p"
            self._stream.bit_rate = max(1_000_000, self._stream.width * self._stream.height * 8)
        frame = av.VideoFrame.from_image(image.convert("RGB"))
        frame = frame.reformat(width=self._stream.width, height=self._stream.height, format="yuv420p")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():  # flush the encoder
                self._container.mux(packet)
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
