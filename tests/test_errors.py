"""Every error vild_d2 raises on purpose derives from vild_d2.VildD2Error (one base to catch)."""

import importlib
import inspect
import pkgutil

import vild_d2
from vild_d2 import VildD2Error

# the installer's patch error: its module is loaded by path before vild_d2 is installed
OUTSIDE_THE_BASE = {"PatchError"}


def _exception_classes():
    found = {}
    for info in pkgutil.walk_packages(vild_d2.__path__, "vild_d2."):
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_class_of_the_package_derives_from_the_base():
    classes = _exception_classes()
    assert len(classes) >= 15  # the walk found the package's errors
    outside = [n for n, c in classes.items() if not issubclass(c, VildD2Error)]
    assert sorted(n.rsplit(".", 1)[1] for n in outside) == sorted(OUTSIDE_THE_BASE), outside


def test_the_base_keeps_the_builtin_kinds_callers_caught():
    from vild_d2.config import ConfigError
    from vild_d2.utils.atomic_io import DiskFullError
    from vild_d2.utils.folder_lock import FolderBusyError

    assert issubclass(ConfigError, ValueError) and issubclass(FolderBusyError, RuntimeError)
    error = DiskFullError(28, "No space left on device")
    assert isinstance(error, OSError) and error.errno == 28
