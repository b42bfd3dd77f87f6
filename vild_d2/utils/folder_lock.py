"""
An exclusive lock on an output folder, so that two jobs (two trainers, two pipelines)
never write into the same one: the second stops at once with one line naming the holder.
The lock is an ``flock`` on ``<folder>/.lock``: released by the kernel when the holder
exits, killed or not, so a stale lock file never blocks a re-run.
"""

import fcntl
import os

from ..errors import VildD2Error

__all__ = ["FolderBusyError", "lock_folder"]

LOCK_FILE = ".lock"  # inside the locked folder; holds the holder's pid and command


class FolderBusyError(VildD2Error, RuntimeError):
    """Another live process holds the folder's lock."""


def lock_folder(folder: str, what: str):
    """
    Take ``folder``'s lock (creating the folder) for the life of this process, or of the
    returned file object if it is closed earlier.

    Args:
        folder: the output folder.
        what: this job, for the holder line that a second job prints.

    Raises:
        FolderBusyError: naming the folder and the process that holds it.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FolderBusyError(
            f"{folder} is in use by {holder}; wait for it to end or choose another output folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} ({what})\n")
    handle.flush()
    return handle
