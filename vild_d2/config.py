"""
vild_d2's config keys (all added here, each with a one-line comment) and config loading
with one-line errors for the usual mistakes.
"""

import os
import re
from typing import List, Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

__all__ = ["add_vild_config", "load_config", "check_datasets_registered", "ConfigError"]


class ConfigError(ValueError):
    """A user mistake in a config file, a command-line override or a dataset name."""


def add_vild_config(cfg: CN) -> None:
    """Add vild_d2's keys, with their defaults, to a detectron2 config."""
    _C = cfg
    _C.VILD_D2 = CN()
    # Version of vild_d2's config keys; bumped when a key changes meaning.
    _C.VILD_D2.VERSION = 1


def load_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """
    detectron2 defaults + vild_d2 keys, then ``config_file``, then ``opts``
    ("KEY VALUE" pairs). Raises ConfigError naming the file or key at fault.
    """
    cfg = get_cfg()
    add_vild_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"{config_file}: {_key_error_text(e)}") from None
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, ValueError, AssertionError) as e:  # yacs asserts on unknown keys
            raise ConfigError(f"command-line override: {_key_error_text(e)}") from None
    return cfg


def _key_error_text(e: Exception) -> str:
    text = str(e.args[0]) if e.args else str(e)
    m = re.match(r"Non-existent (?:config )?key: (\S+)", text)  # yacs' two wordings
    return f"unknown config key {m.group(1)}" if m else text


def check_datasets_registered(cfg: CN) -> None:
    """Raise ConfigError if DATASETS.TRAIN/TEST names a dataset that is not registered."""
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        names: List[str] = list(cfg.DATASETS[key])
        for name in names:
            if name not in registered:
                raise ConfigError(
                    f"DATASETS.{key} names dataset '{name}', which is not registered "
                    "(see datasets/README.md for vild_d2's datasets)"
                )
