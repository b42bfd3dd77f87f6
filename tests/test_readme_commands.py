"""The READMEs' commands name the project's environment's python, never a bare one."""

import glob
import os
import re

import pytest

from .conftest import ROOT

READMES = ["README.md", "datasets/README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
)
# a command of this project run with a bare `python` (which has no detectron2)
BARE = re.compile(r"(^|[\s`(])python\s+(train_net\.py|tools/|datasets/|demo/)")


def _blocks(text):
    """(fenced code block text) for each ``` block."""
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("readme", READMES)
def test_commands_name_the_projects_python(readme):
    text = open(os.path.join(ROOT, readme), encoding="utf-8").read()
    bad = []
    for block in _blocks(text):
        if "VILD_PYTHON" in block:  # the block about installing into your own environment
            continue
        bad += [line for line in block.splitlines() if BARE.search(line)]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    bad += [m.group(0) for m in re.finditer(r"`python [^`]*`", prose) if BARE.search(m.group(0))]
    assert not bad, f"{readme}: use .venv/bin/python (or say which python): {bad[:5]}"
    assert ".venv/bin/python" in text
