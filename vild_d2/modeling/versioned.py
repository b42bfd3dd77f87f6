"""
State-dict versions of vild_d2's modules, the detectron2 way (PointRend's ROI heads do the
same): torch records every module's ``_version`` in the metadata of each state dict it saves,
so a checkpoint says which layout of a module wrote it. A module's layout changes (a renamed
or reshaped parameter) bump its ``_version`` and add an upgrade from the old one; a
checkpoint written by a newer vild_d2 is refused in one line instead of loading half.
"""

from typing import Callable, Dict

from ..errors import VildD2Error

__all__ = ["VersionedModule", "CheckpointVersionError"]


class CheckpointVersionError(VildD2Error, ValueError):
    """A checkpoint holds a module in a layout this vild_d2 does not know (a newer one)."""


class VersionedModule:
    """
    Mix-in for an ``nn.Module`` (listed before it among the bases). ``_version`` is the
    layout this code writes; ``_upgrades[v]`` rewrites, in place, the entries under ``prefix``
    of a state dict written by layout ``v`` into layout ``v + 1``. A checkpoint without a
    recorded version (not saved by torch's ``state_dict``) is taken as the current layout.
    """

    _version = 1
    _upgrades: Dict[int, Callable[[dict, str], None]] = {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        found = local_metadata.get("version", self._version)
        if found > self._version:
            raise CheckpointVersionError(
                f"checkpoint entry '{prefix or '(the model)'}' ({type(self).__name__}) has layout"
                f" version {found}, but this vild_d2 knows up to {self._version}: the checkpoint"
                " was written by a newer vild_d2; upgrade vild_d2 to load it"
            )
        for version in range(found, self._version):
            self._upgrades[version](state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)
