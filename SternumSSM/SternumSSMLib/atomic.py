"""Atomic file output: write beside the target, then rename, so no reader sees half a file.

The data are flushed to disk (fsync) before the rename and the folder entry after it, so a
power cut leaves either the old file or the complete new one, never an empty file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def _full_suffix(path: Path) -> str:
    """'.seg.nrrd' for 'x.seg.nrrd', so writers that pick a format by extension still work."""
    return "".join(path.suffixes)


def fsync_file(path: Path | str) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(folder: Path | str) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(descriptor)


def is_read_only(folder: Path) -> bool:
    """True when the folder denies writing, including to root: no write bit set counts as read-only."""
    return not os.access(folder, os.W_OK) or not (folder.stat().st_mode & 0o222)


def check_output_folder(folder: Path) -> None:
    """Refuse an output folder that is missing or read-only, with a message that says what to do."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {folder} does not exist; create it first.")
    if is_read_only(folder):
        raise PermissionError(f"Folder {folder} is not writable; choose a writable output folder.")


@contextlib.contextmanager
def atomic_output_path(path: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Without ``overwrite`` an existing ``path`` is an error and stays untouched. On any
    failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or ask explicitly to overwrite it.")
    check_output_folder(path.parent)
    suffix = _full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    temporary = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        yield temporary
        if not temporary.exists():
            raise OSError(f"Writing {path} produced no file.")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} appeared while it was being written; nothing was replaced.")
        fsync_file(temporary)
        os.replace(temporary, path)
        fsync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_text_atomic(path: Path | str, text: str, overwrite: bool = False) -> Path:
    path = Path(path)
    with atomic_output_path(path, overwrite=overwrite) as temporary:
        temporary.write_text(text)
    return path
