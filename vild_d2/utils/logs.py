"""Loggers of other packages quietened for one block, where what they say is no news."""

import logging
from contextlib import contextmanager

__all__ = ["quiet_logger"]


@contextmanager
def quiet_logger(name: str, level: int = logging.ERROR):
    """Within the block, the logger ``name`` passes only records of ``level`` and above."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
