"""
Output folders that a tool writes whole (``demo/demo.py``, the checkpoint converter): what
``--overwrite`` may replace.

A tool leaves :data:`OWNER_FILE` (its name) in each folder it writes. ``--overwrite``
replaces a non-empty folder only when that file names the same tool: never a folder of
the user's, never a file, never a folder that holds an input or lies inside one.
"""

import os
from typing import Iterable, Optional

from ..errors import VildD2Error

__all__ = ["OWNER_FILE", "OutputFolderError", "check_output_folder", "mark_output_folder"]

OWNER_FILE = ".vild_d2_output"  # in a folder a tool wrote: that tool's name, one line


class OutputFolderError(VildD2Error, ValueError):
    """An output folder a tool must not write or replace; names it and why."""


def _owner(folder: str) -> Optional[str]:
    try:
        with open(os.path.join(folder, OWNER_FILE), encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _clash(output: str, path: str) -> Optional[str]:
    """How the folder ``output`` and the input ``path`` overlap ("" if they do not)."""
    out, inp = os.path.realpath(output), os.path.realpath(path)
    if out == inp:
        return "is"
    if inp.startswith(out + os.sep):
        return "holds"
    if out.startswith(inp + os.sep):
        return "is inside"
    return None


def check_output_folder(
    output: str, tool: str, inputs: Iterable[str] = (), overwrite: bool = False
) -> None:
    """
    Refuse (OutputFolderError) an ``output`` that is a file, that is, holds or lies inside
    one of ``inputs`` (paths that exist), or that is a non-empty folder ``tool`` did not
    write (or any non-empty folder without ``overwrite``).
    """
    if os.path.lexists(output) and not os.path.isdir(output):
        raise OutputFolderError(f"--output {output} is a file, not a folder: choose a folder")
    for path in inputs:
        if path and os.path.exists(path):
            clash = _clash(output, path)
            if clash:
                raise OutputFolderError(
                    f"--output {output} {clash} the input {path}: choose a folder apart from"
                    " the inputs"
                )
    if not os.path.isdir(output) or not os.listdir(output):
        return
    owner = _owner(output)
    if owner != tool:
        written = f"was written by {owner}" if owner else f"was not written by {tool}"
        raise OutputFolderError(
            f"--output {output} is not empty and {written} (no {OWNER_FILE} of its own):"
            f" choose another folder; --overwrite replaces only a folder {tool} wrote"
        )
    if not overwrite:
        raise OutputFolderError(
            f"--output {output} holds an earlier {tool} output: add --overwrite to replace it"
            " as a whole, or choose another folder"
        )


def mark_output_folder(folder: str, tool: str) -> None:
    """Leave ``tool``'s mark in ``folder`` (being written), so a later run may replace it."""
    with open(os.path.join(folder, OWNER_FILE), "w", encoding="utf-8") as f:
        f.write(tool + "\n")
