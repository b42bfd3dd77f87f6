"""Datasets (registration, generators) and, later, the data path for distillation."""

from . import datasets  # noqa: F401  (registers the builtin datasets)
