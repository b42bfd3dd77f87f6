"""
A reader of TensorFlow's checkpoint format (the "tensor bundle", V2), without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus ``PREFIX.data-0000K-of-0000N``. The index
is a sorted-string table (LevelDB's table layout): a footer points at an index block,
which points at data blocks of prefix-compressed ``key -> value`` entries. Key ``""``
holds a ``BundleHeaderProto`` and every other key, a variable's name, a
``BundleEntryProto`` (dtype, shape, shard, byte offset, size, masked CRC32C). The data
files hold the raw little-endian tensor bytes.

Every check that TensorFlow's own reader makes is made here too (block and tensor
checksums, sizes, the footer's magic number), and each failure raises
:class:`CheckpointFormatError` naming the file: a truncated or corrupt download fails in
one line instead of giving wrong weights.
"""

import os
import struct
from typing import Dict, Iterator, List, Optional, Tuple

import google_crc32c
import numpy as np

from ..errors import VildD2Error

__all__ = ["CheckpointFormatError", "TFCheckpointReader", "checkpoint_prefix"]

_TABLE_MAGIC = 0xDB4775248B80FB57  # the footer's last 8 bytes, little-endian
_FOOTER_SIZE = 48  # two block handles (varints) padded to 40 bytes + the magic number
_BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked CRC32C
_CRC_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto: the dtypes a checkpoint of weights can hold
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}


class CheckpointFormatError(VildD2Error, ValueError):
    """A file that is not a readable TensorFlow checkpoint; the message names it."""


def _state_file_choice(folder: str):
    """The checkpoint a TF ``checkpoint`` state file names, as a file name; None if none."""
    state = os.path.join(folder, "checkpoint")
    if not os.path.isfile(state):
        return None
    with open(state, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("model_checkpoint_path:"):
                # a Saver writes where it ran (e.g. gs://bucket/model.ckpt-180000): the name counts
                return os.path.basename(line.split(":", 1)[1].strip().strip('"'))
    return None


def _prefix_in_folder(folder: str) -> str:
    """
    The one checkpoint (``*.index``) of ``folder``; with several, the one its ``checkpoint``
    state file names. CheckpointFormatError listing them otherwise.
    """
    prefixes = sorted(n[: -len(".index")] for n in os.listdir(folder) if n.endswith(".index"))
    if len(prefixes) == 1:
        return prefixes[0]
    chosen = _state_file_choice(folder)
    if chosen in prefixes:
        return chosen
    named = f"; its checkpoint file names {chosen}, which is not among them" if chosen else ""
    raise CheckpointFormatError(
        f"{folder}: expected one TensorFlow checkpoint (*.index) in the folder, found "
        f"{len(prefixes)}{': ' + ', '.join(prefixes[:5]) if prefixes else ''}{named}"
    )


def checkpoint_prefix(path: str) -> str:
    """
    The checkpoint prefix meant by ``path``: the prefix itself, its ``.index`` file, a
    ``.data-*`` file, or a folder holding one ``*.index`` (with several, the one that a
    TensorFlow ``checkpoint`` state file names; the path it records may point elsewhere,
    e.g. to where the Saver ran: only its file name is used).
    """
    if os.path.isdir(path):
        return os.path.join(path, _prefix_in_folder(path))
    if path.endswith(".index"):
        return path[: -len(".index")]
    if ".data-" in os.path.basename(path):
        return path[: path.rindex(".data-")]
    return path


def _masked_crc(data) -> int:
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _varint(buf, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _proto_fields(buf) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value) of a serialised protobuf message, in order."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos : pos + size]), pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _shape(buf) -> Tuple[int, ...]:
    dims = []
    for field, _, value in _proto_fields(buf):
        if field == 2:  # TensorShapeProto.dim
            size = next((v for f, _, v in _proto_fields(value) if f == 1), 0)
            dims.append(size)
    return tuple(dims)


class _Entry:
    """One variable's BundleEntryProto."""

    __slots__ = ("dtype", "shape", "shard", "offset", "size", "crc", "sliced")

    def __init__(self, buf: bytes):
        self.dtype, self.shape, self.shard, self.offset, self.size = 1, (), 0, 0, 0
        self.crc: Optional[int] = None
        self.sliced = False
        for field, _, value in _proto_fields(buf):
            if field == 1:
                self.dtype = value
            elif field == 2:
                self.shape = _shape(value)
            elif field == 3:
                self.shard = value
            elif field == 4:
                self.offset = value
            elif field == 5:
                self.size = value
            elif field == 6:
                self.crc = value
            elif field == 7:
                self.sliced = True


class TFCheckpointReader:
    """
    Read the variables of a TensorFlow V2 checkpoint::

        reader = TFCheckpointReader("resnet50_vild/model.ckpt-180000")
        reader.variables()            # {name: shape}
        reader.get_tensor("fpn/l2/kernel")   # np.ndarray, checksum verified

    Args:
        path: see :func:`checkpoint_prefix`.
    """

    def __init__(self, path: str):
        self.prefix = checkpoint_prefix(path)
        self.index_file = self.prefix + ".index"
        if not os.path.isfile(self.index_file):
            raise CheckpointFormatError(
                f"{path}: not a TensorFlow checkpoint ({self.index_file} not found)"
            )
        with open(self.index_file, "rb") as f:
            index = f.read()
        try:
            entries = self._read_table(index)
        except CheckpointFormatError:
            raise
        except (IndexError, ValueError, struct.error) as e:  # a malformed table or message
            raise CheckpointFormatError(f"{self.index_file}: malformed checkpoint index ({e})")
        header = entries.pop(b"", None)
        if header is None:
            raise CheckpointFormatError(
                f"{self.index_file}: no bundle header (not a V2 checkpoint)"
            )
        fields = {f: v for f, _, v in _proto_fields(header)}
        self.num_shards = fields.get(1, 1)
        if fields.get(2, 0) != 0:
            raise CheckpointFormatError(f"{self.index_file}: big-endian checkpoints are not read")
        self._entries: Dict[str, _Entry] = {}
        for key, value in entries.items():
            try:
                self._entries[key.decode("utf-8")] = _Entry(value)
            except (IndexError, ValueError, struct.error, UnicodeDecodeError) as e:
                raise CheckpointFormatError(
                    f"{self.index_file}: malformed entry {key[:80]!r} ({e})"
                ) from None
        self._data: Dict[int, np.memmap] = {}

    # ------------------------------------------------------------------ the table
    def _read_table(self, index: bytes) -> Dict[bytes, bytes]:
        if len(index) < _FOOTER_SIZE:
            raise CheckpointFormatError(
                f"{self.index_file}: {len(index)} bytes, too short for a checkpoint index "
                "(truncated or not a TensorFlow checkpoint)"
            )
        footer = index[-_FOOTER_SIZE:]
        if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
            raise CheckpointFormatError(
                f"{self.index_file}: not a TensorFlow checkpoint index (bad magic number; "
                "truncated or another kind of file)"
            )
        _, pos = _varint(footer, 0)  # the metaindex block: unused by checkpoints
        _, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        entries: Dict[bytes, bytes] = {}
        for _, handle in self._block_entries(index, index_offset, index_size):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            entries.update(self._block_entries(index, offset, size))
        return entries

    def _block_entries(self, index: bytes, offset: int, size: int) -> List[Tuple[bytes, bytes]]:
        end = offset + size + _BLOCK_TRAILER_SIZE
        if end > len(index) - _FOOTER_SIZE:
            raise CheckpointFormatError(f"{self.index_file}: a block runs past the end (truncated)")
        block = index[offset : offset + size]
        compression, crc = struct.unpack("<BI", index[offset + size : end])
        if _masked_crc(index[offset : offset + size + 1]) != crc:
            raise CheckpointFormatError(
                f"{self.index_file}: checksum mismatch in a block (corrupt)"
            )
        if compression != 0:
            raise CheckpointFormatError(
                f"{self.index_file}: compressed index blocks (type {compression}) are not read"
            )
        num_restarts = struct.unpack("<I", block[-4:])[0]
        limit = len(block) - 4 - 4 * num_restarts
        out, pos, key = [], 0, b""
        while pos < limit:
            shared, pos = _varint(block, pos)
            unshared, pos = _varint(block, pos)
            value_size, pos = _varint(block, pos)
            key = key[:shared] + block[pos : pos + unshared]
            pos += unshared
            out.append((key, block[pos : pos + value_size]))
            pos += value_size
        return out

    # -------------------------------------------------------------- the variables
    def variables(self) -> Dict[str, Tuple[int, ...]]:
        """{name: shape} of every variable, in name order."""
        return {name: e.shape for name, e in sorted(self._entries.items())}

    def dtype_name(self, name: str) -> str:
        code = self._entries[name].dtype
        return (
            np.dtype(_DTYPES[code]).name if code in _DTYPES else _DTYPE_NAMES.get(code, str(code))
        )

    def _shard(self, shard: int) -> np.memmap:
        if shard not in self._data:
            path = f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"
            if not os.path.isfile(path):
                raise CheckpointFormatError(f"{path}: data file of the checkpoint not found")
            self._data[shard] = (
                np.memmap(path, dtype=np.uint8, mode="r")
                if os.path.getsize(path)
                else np.zeros(0, np.uint8)
            )
        return self._data[shard]

    def get_tensor(self, name: str) -> np.ndarray:
        """The variable ``name`` as a new array (its checksum verified)."""
        if name not in self._entries:
            raise KeyError(f"{self.prefix}: no variable {name!r}")
        entry = self._entries[name]
        if entry.sliced:
            raise CheckpointFormatError(f"{self.prefix}: variable {name} is partitioned (slices)")
        if entry.dtype not in _DTYPES:
            raise CheckpointFormatError(
                f"{self.prefix}: variable {name} has dtype {self.dtype_name(name)}, not numbers"
            )
        data = self._shard(entry.shard)
        end = entry.offset + entry.size
        if end > len(data):
            raise CheckpointFormatError(
                f"{self.prefix}.data-{entry.shard:05d}-of-{self.num_shards:05d}: variable {name} "
                f"needs bytes {entry.offset}..{end} but the file has {len(data)} (truncated)"
            )
        raw = data[entry.offset : end]
        if entry.crc is not None and _masked_crc(raw) != entry.crc:
            raise CheckpointFormatError(
                f"{self.prefix}: checksum mismatch in variable {name} (corrupt data file)"
            )
        dtype = np.dtype(_DTYPES[entry.dtype]).newbyteorder("<")
        count = int(np.prod(entry.shape)) if entry.shape else 1
        if entry.size != count * dtype.itemsize:
            raise CheckpointFormatError(
                f"{self.prefix}: variable {name} holds {entry.size} bytes, expected "
                f"{count * dtype.itemsize} for shape {list(entry.shape)}"
            )
        return (
            np.frombuffer(raw.tobytes(), dtype=dtype)
            .reshape(entry.shape)
            .astype(dtype.newbyteorder("="))
        )
