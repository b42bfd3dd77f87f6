"""
Where a number was measured: the machine, the software and the commit of the checkout that
ran it. Benchmarks and the world pipeline record it beside their results, so that a table
generated from them says where it came from.
"""

import datetime
import os
import platform
import subprocess
from typing import Optional

import torch

__all__ = ["machine_description", "checkout_commit", "run_provenance"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_description() -> str:
    """One line: CPU, cores, GPU, Python, torch and its thread count."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{_cpu_name()}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch"
        f" {torch.__version__}, {torch.get_num_threads()} torch threads"
    )


def _git(checkout: str, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "-C", checkout, *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def checkout_commit(checkout: str) -> Optional[str]:
    """
    The short commit of the git checkout at ``checkout``, with "+changes" when tracked files
    differ from it; None outside a git checkout (or without git).
    """
    commit = _git(checkout, "rev-parse", "--short", "HEAD")
    if commit is None:
        return None
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=no")
    return commit + ("+changes" if changed else "")


def run_provenance(checkout: str) -> dict:
    """
    The commit of ``checkout`` (the scripts that ran), the vild_d2 package that ran (its
    version and folder), the UTC date and time, and the machine.
    """
    import vild_d2

    return {
        "commit": checkout_commit(checkout),
        "vild_d2": f"{vild_d2.__version__} at {os.path.dirname(os.path.abspath(vild_d2.__file__))}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
    }
