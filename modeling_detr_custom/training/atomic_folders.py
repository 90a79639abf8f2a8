"""Folders that are replaced all at once: written next to their final name, fsynced, then renamed.

Used for resumable checkpoints and for the `best/` and `last/` model folders, so a run killed at any moment leaves
either the previous complete folder or the new complete one, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["OutputWriteError", "fsync_tree", "recover_folder", "replace_folder", "temporary_sibling"]


class OutputWriteError(RuntimeError):
    """Writing into the output folder failed (disk full, no permission); the message names the path."""


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
        os.replace(old, final)


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
