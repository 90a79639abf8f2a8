"""Folders that are replaced all at once: written next to their final name, fsynced, then renamed.

Used for resumable checkpoints and for the `best/` and `last/` model folders, so a run killed at any moment leaves
either the previous complete folder or the new complete one, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "OutputWriteError",
    "fsync_tree",
    "recover_folder",
    "replace_folder",
    "temporary_sibling",
    "write_on_every_process",
]


class OutputWriteError(RuntimeError):
    """Writing into the output folder failed (disk full, no permission); the message names the path."""


def write_on_every_process(accelerator: Any, write: Callable[[], None], target: Path) -> None:
    """Run `write` on every process; if it fails anywhere, every process raises the same `OutputWriteError`.

    Without this, a process whose disk write failed would leave the others waiting at the next barrier forever.
    OSError and torch's RuntimeError for ENOSPC ("[enforce fail at inline_container.cc ...]") are what a full or
    read-only disk raises.
    """
    from accelerate.utils import gather_object

    reason = None
    try:
        write()
    except OutputWriteError as error:  # a nested write already named its folder: keep that message
        reason = str(error)
    except (OSError, RuntimeError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = f"Could not write {target} (disk full or no permission?): {first_line}"
    reasons = [r for r in gather_object([reason]) if r] if accelerator.num_processes > 1 else [r for r in [reason] if r]
    if reasons:
        raise OutputWriteError(reasons[0])


def temporary_sibling(final: Path) -> Path:
    """The folder a new version of `final` is written to before `replace_folder` renames it (emptied here)."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folders themselves, to the disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(root))


def replace_folder(tmp: Path, final: Path) -> Path:
    """Make the complete folder `tmp` the new `final`; the previous `final` is removed only afterwards.

    Between the two renames the previous version is at `<final>.old`, which `recover_folder` puts back.
    """
    fsync_tree(tmp)
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def recover_folder(final: Path) -> None:
    """Put back `<final>.old` if a kill between the two renames of `replace_folder` left `final` missing."""
    old = final.with_name(final.name + ".old")
    if old.is_dir() and not final.exists():
        try:
            os.replace(old, final)
        except FileNotFoundError:  # another process of the same run put it back first
            pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
