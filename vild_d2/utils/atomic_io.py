"""
Crash-safe file writes: write to a temporary file in the same folder, fsync, then
``os.replace`` it over the target, so a reader (or a resumed job) sees either the old
file or the complete new one, never a half-written file. The file gets the permissions
a plain ``open(path, "w")`` would give (0666 less the umask), so a team can share it.
"""

import errno
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Optional

import numpy as np

from ..errors import VildD2Error

__all__ = [
    "atomic_write",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_folder",
    "fsync_dir",
    "DiskFullError",
    "disk_full",
]


class DiskFullError(VildD2Error, OSError):
    """A write that failed for want of space; names the target and the space left."""


def disk_full(error: BaseException, target: str) -> Optional[DiskFullError]:
    """
    ``error`` as a :class:`DiskFullError` naming ``target`` if it is a failed write for want
    of space: ENOSPC (or EDQUOT), or torch.save's short write ("unexpected pos", which
    carries no errno); None for any other error.
    """
    no_space = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    short_write = isinstance(error, RuntimeError) and "unexpected pos" in str(error)
    if not (no_space or short_write):
        return None
    folder = os.path.dirname(os.path.abspath(target))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free / 2**20
    full = DiskFullError(
        f"no space left on the device to write {target} ({free:.1f} MiB free there); nothing"
        " was written: free some space or choose another folder"
    )
    full.errno = errno.ENOSPC
    return full


def fsync_dir(path: str) -> None:
    """Make a rename inside folder ``path`` durable (no-op where folders can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """
    Call ``write(f)`` on a temporary file next to ``path``, then atomically replace
    ``path`` with it. The temporary file is removed if ``write`` raises.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented json, atomically."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True), mode="w")


def atomic_save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` ``array`` to ``path`` (which should end in .npy), atomically."""
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def atomic_folder(path: str, fill: Callable[[str], None]) -> None:
    """
    Create the folder ``path`` whole or not at all: ``fill(tmp)`` writes its content into
    a temporary sibling folder, which then takes the place of ``path`` (an existing
    ``path`` is replaced as a whole). The temporary folder is removed if ``fill`` raises.
    """
    final = os.path.abspath(path)
    if os.path.lexists(final) and not os.path.isdir(final):
        raise FileExistsError(f"{path} is a file, not a folder: it is not replaced")
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        fill(tmp)
        if os.path.exists(final):
            old = tmp + ".old"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as e:
        full = disk_full(e, path)  # the space left while the partial folder still stands
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from None
        raise
    fsync_dir(parent)
