"""
Convert an official ViLD checkpoint, as downloaded, into a folder that vild_d2 runs:

    OUTPUT/model_final.pth         detectron2 checkpoint of configs/LVIS-OV-official's model
    OUTPUT/class_embeddings.npy    [C, D] the classifier's text embeddings (``class-predict``)
    OUTPUT/class_embeddings.json   their provenance: the CLIP that made them (ViT-B/32)
    OUTPUT/config.yaml             the matching config (weights and vocabulary set)
    OUTPUT/conversion.json         source, architecture, variable counts

The folder appears whole or not at all (:func:`atomic_folder`): everything is written and
checked there first (the model is built from the written config and loads the weights
with no missing or unused key).
"""

import errno
import json
import os
import tarfile
import tempfile
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model
from tqdm import tqdm

from ..config import load_config
from ..utils.atomic_io import atomic_folder
from ..utils.output_folder import OutputFolderError, check_output_folder, mark_output_folder
from .official_vild import (
    ConversionError,
    OfficialArchitecture,
    convert_variables,
    ema_shadows,
    variable_sources,
)
from .tf_checkpoint import CheckpointFormatError, TFCheckpointReader

__all__ = ["convert_official_checkpoint", "open_checkpoint", "WEIGHTS_FILE", "VOCABULARY_FILE"]

WEIGHTS_FILE = "model_final.pth"
VOCABULARY_FILE = "class_embeddings.npy"
VOCABULARY_INFO_FILE = "class_embeddings.json"  # beside it, as precompute_text_embeddings writes
# The release's classifier holds CLIP ViT-B/32 text embeddings of LVIS's names (ViLD paper,
# Sec. 4.1): new words must be embedded by the same CLIP.
RELEASE_TEACHER = "ViT-B/32"
CONFIG_FILE = "config.yaml"
REPORT_FILE = "conversion.json"
TOOL = "convert_official_checkpoint.py"  # the name its output folders carry

Variables = Tuple[Dict[str, Tuple[int, ...]], Callable[[str], np.ndarray]]


@contextmanager
def open_checkpoint(path: str) -> Iterator[Variables]:
    """
    ``({name: shape}, read(name) -> array)`` of a TensorFlow checkpoint given as its prefix,
    ``.index`` file or folder, a ``.tar.gz`` / ``.tgz`` / ``.tar`` holding one (as the
    official release is downloaded; unpacked to a temporary folder), or a ``.npz`` of
    variables (name -> array). Raises CheckpointFormatError naming the file the user gave
    (inside an archive: ``ARCHIVE:member``, never the temporary folder).
    """
    if path.endswith(".npz"):
        with _open_npz(path) as variables:
            yield variables
        return
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        with tempfile.TemporaryDirectory(prefix="vild_official_") as tmp:
            folder = _unpack(path, tmp)
            try:
                reader = TFCheckpointReader(folder)
                yield reader.variables(), reader.get_tensor
            except CheckpointFormatError as e:  # name the archive, not the temporary copy
                raise CheckpointFormatError(str(e).replace(tmp + os.sep, path + ":")) from None
        return
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise CheckpointFormatError(f"{path}: not found")
    reader = TFCheckpointReader(path)
    yield reader.variables(), reader.get_tensor


@contextmanager
def _open_npz(path: str) -> Iterator[Variables]:
    """A .npz of variables; only the file's own problems read as "not a readable .npz"."""
    try:
        npz = np.load(path, allow_pickle=False)
        shapes = {n: tuple(npz[n].shape) for n in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointFormatError(f"{path}: not a readable .npz of variables ({e})") from None

    def read(name: str) -> np.ndarray:
        if name not in shapes:
            raise CheckpointFormatError(f"{path}: no variable {name}")
        return npz[name]

    with npz:
        yield shapes, read


def _unpack(archive_path: str, tmp: str) -> str:
    """Unpack the archive into ``tmp``; the folder of its one checkpoint."""
    try:
        with tarfile.open(archive_path) as archive:
            archive.extractall(tmp, filter="data")
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise CheckpointFormatError(
                f"{archive_path}: no space left on the device of {os.path.dirname(tmp)} to"
                " unpack it (set TMPDIR to a folder with room, or unpack it yourself and give"
                " the folder)"
            ) from None
        raise CheckpointFormatError(f"{archive_path}: not a readable archive ({e})") from None
    except (tarfile.TarError, EOFError) as e:
        raise CheckpointFormatError(f"{archive_path}: not a readable archive ({e})") from None
    folders = sorted(
        {root for root, _, files in os.walk(tmp) if any(f.endswith(".index") for f in files)}
    )
    if len(folders) != 1:
        raise CheckpointFormatError(
            f"{archive_path}: expected one TensorFlow checkpoint (*.index) in the archive, "
            f"found {len(folders)} folders with one"
        )
    return folders[0]


def _base_config(configs_dir: str, arch: OfficialArchitecture) -> str:
    depth = arch.depth if arch.depth in (50, 152) else 50  # other depths: DEPTH overridden
    kind = "vild_ensemble" if arch.ensemble else "vild"
    return os.path.join(configs_dir, "LVIS-OV-official", f"{kind}_R_{depth}_FPN.yaml")


def _write_config(folder: str, final: str, configs_dir: str, arch: OfficialArchitecture) -> str:
    vocabulary = os.path.join(final, VOCABULARY_FILE)
    opts = arch.config_overrides() + [
        "MODEL.WEIGHTS",
        os.path.join(final, WEIGHTS_FILE),
        "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS",
        vocabulary,
        "MODEL.VILD.TEST_TEXT_EMBEDDINGS",
        vocabulary,
        "MODEL.DEVICE",  # what this machine runs (detectron2's default is cuda)
        "cuda" if torch.cuda.is_available() else "cpu",
    ]
    cfg = load_config(_base_config(configs_dir, arch), opts)
    with open(os.path.join(folder, CONFIG_FILE), "w") as f:
        f.write(f"# {arch.name} converted by tools/convert_official_checkpoint.py\n")
        f.write(cfg.dump())
    return os.path.join(folder, CONFIG_FILE)


def _check_shapes(model, state: Dict[str, torch.Tensor], arch: OfficialArchitecture) -> None:
    """ConversionError naming the TF variables whose shapes the built model cannot take."""
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        source = variable_sources(arch)
        shown = "; ".join(
            f"{source.get(k, k)} converts to {list(state[k].shape)}, the model needs"
            f" {list(expected[k].shape)}"
            for k in wrong[:3]
        )
        raise ConversionError(
            f"{len(wrong)} variables do not fit the widths read from the others ({shown}):"
            " the checkpoint's variables disagree on the network's shape"
        )


def _check_loads(
    config_file: str, folder: str, state: Dict[str, torch.Tensor], arch: OfficialArchitecture
) -> None:
    """Build the model of ``config_file``; ``state`` must fit it (num_batches_tracked aside)."""
    cfg = load_config(
        config_file,
        [
            "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
            "MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", os.path.join(folder, VOCABULARY_FILE),
            "MODEL.VILD.TEST_TEXT_EMBEDDINGS", os.path.join(folder, VOCABULARY_FILE),
        ],
    )  # fmt: skip
    model = build_model(cfg)
    _check_shapes(model, state, arch)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"the converted weights do not fit {config_file}: missing {missing[:5]}, "
            f"unused {result.unexpected_keys[:5]}"
        )


def _source_paths(source: str) -> list:
    """The files or folder a source names (a checkpoint prefix stands for its files)."""
    return [source] + [source + ext for ext in (".index",) if os.path.exists(source + ext)]


def _write_folder(folder, final, configs_dir, state, vocabulary, arch, report) -> None:
    mark_output_folder(folder, TOOL)
    np.save(os.path.join(folder, VOCABULARY_FILE), vocabulary, allow_pickle=False)
    with open(os.path.join(folder, VOCABULARY_INFO_FILE), "w") as f:
        info = {"teacher": RELEASE_TEACHER, "num_classes": int(vocabulary.shape[0])}
        json.dump({**info, "embed_dim": int(vocabulary.shape[1]), "source": arch.name}, f)
    config_file = _write_config(folder, final, configs_dir, arch)
    _check_loads(config_file, folder, state, arch)
    checkpoint = {"model": state, "__author__": "vild_d2 tools/convert_official_checkpoint.py"}
    torch.save(checkpoint, os.path.join(folder, WEIGHTS_FILE))
    with open(os.path.join(folder, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)


def convert_official_checkpoint(
    source: str,
    output: str,
    configs_dir: str,
    overwrite: bool = False,
    progress: bool = True,
    use_ema: bool = False,
) -> dict:
    """
    Convert ``source`` (see :func:`open_checkpoint`) into the folder ``output``.

    Args:
        configs_dir: the checkout's ``configs/`` (the converted config is built on
            ``configs/LVIS-OV-official``).
        overwrite: replace an ``output`` folder that is not empty (as a whole).
        progress: a progress bar over the variables.
        use_ema: convert the ExponentialMovingAverage shadows instead of the raw weights.

    Returns:
        the report written to ``conversion.json``.

    Raises:
        CheckpointFormatError, ConversionError, ConfigError: naming the file or variable.
    """
    final = os.path.abspath(output)
    try:
        check_output_folder(output, TOOL, _source_paths(source), overwrite)
    except OutputFolderError as e:
        raise ConversionError(str(e)) from None
    with open_checkpoint(source) as (shapes, read):
        with tqdm(unit="var", desc="converting", disable=not progress) as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                state, vocabulary, arch = convert_variables(shapes, read, advance, use_ema)
            except ConversionError as e:
                raise ConversionError(f"{source}: {e}") from None
    report = {
        "source": os.path.abspath(source),
        "architecture": vars(arch),
        "model": arch.name,
        "variables": len(shapes),
        "weights": len(state),
        "values": int(sum(v.numel() for v in state.values())),
        "vocabulary": list(vocabulary.shape),
        # which set of weights was converted, when the checkpoint holds two
        "ema_shadows": len(ema_shadows(shapes)),
        "weights_used": "ExponentialMovingAverage" if use_ema else "raw",
    }
    atomic_folder(
        final,
        lambda folder: _write_folder(folder, final, configs_dir, state, vocabulary, arch, report),
    )
    return report
