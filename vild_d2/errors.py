"""
The one base of the errors vild_d2 raises on purpose.

Every such error is about a user's input or a run's state (a config key, a file, an
image id, a checkpoint, a folder) and its message is one line that names what is at
fault, fit to be printed as a command's error: the command-line tools catch
:class:`VildD2Error` and print it, where any other exception is a bug and keeps its
traceback. Each subclass also derives from the built-in exception it has always been
(ValueError, RuntimeError, OSError), so code that caught those still does.

Not under this base: ``compat.detectron2_patch.PatchError``, raised by the installer,
which loads that module by path before anything (vild_d2 included) is installed.
"""

__all__ = ["VildD2Error"]


class VildD2Error(Exception):
    """A vild_d2 error whose message is one line naming the file, key, id or shape at fault."""
