"""Import a command-line script of the repository (tools/, demo/, datasets/) as a module."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(relative_path: str):
    """The module of ``ROOT/relative_path`` (e.g. "tools/export_model.py"), freshly executed."""
    name = "script_" + relative_path.replace("/", "_").replace(".py", "")
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
