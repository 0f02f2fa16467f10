"""Reading TensorFlow checkpoints (the V2 "tensor bundle" format) with numpy alone, checksums verified.

A checkpoint is named by its prefix, e.g. ``model.ckpt-1000000``: ``PREFIX.index`` is a LevelDB-style
sorted table mapping each variable name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size,
CRC32C), and ``PREFIX.data-NNNNN-of-NNNNN`` shards hold the raw little-endian tensor bytes. Every table
block and every tensor carries a masked CRC32C; a mismatch is reported, never read past. The table format
(footer, block handles, prefix-compressed keys) is LevelDB's; the protobuf records are decoded by hand
because only four small messages are needed. ``resolve_prefix`` (strict, for the converter),
``checkpoint_prefix`` and ``checkpoints_in`` find a checkpoint's prefix from a path or in a folder.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ner.errors import DataFileError

try:
    import google_crc32c
except ImportError:  # the numpy fallback below is used instead
    google_crc32c = None

logger = logging.getLogger(__name__)

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # TF2 object-based checkpoints hold this entry
_CRC_MASK_DELTA = 0xA282EAD8
_DATA_SUFFIX = ".data-"

# TF DataType enum -> (name, numpy dtype of the bytes on disk). bfloat16 is read as uint16, then widened.
DTYPES = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"), 5: ("int16", "<i2"),
    6: ("int8", "i1"), 7: ("string", None), 9: ("int64", "<i8"), 10: ("bool", "?"), 14: ("bfloat16", "<u2"),
    17: ("uint16", "<u2"), 19: ("float16", "<f2"), 22: ("uint32", "<u4"), 23: ("uint64", "<u8"),
}


# --- CRC32C (Castagnoli) -----------------------------------------------------------------------

def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
    return table


_TABLE = _byte_table()
_BASIS = np.uint32(1) << np.arange(32, dtype=np.uint32)


# The numpy fallback splits the data into lanes, runs the byte-table CRC on all lanes at once, then
# merges neighbouring lanes: crc(a + b) = shift(crc(a), len(b)) ^ crc(b) for a zero-initialised register,
# where "shift by n zero bytes" is a GF(2)-linear map, held as 4 tables of 256 (one per input byte).
def _apply(tables: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (tables[0][values & 0xFF] ^ tables[1][(values >> 8) & 0xFF]
            ^ tables[2][(values >> 16) & 0xFF] ^ tables[3][values >> 24])


def _tables_of(images: np.ndarray) -> np.ndarray:
    """The tables of the linear map that sends bit i to ``images[i]``."""
    tables = np.zeros((4, 256), dtype=np.uint32)
    for bit in range(32):
        byte, low = divmod(bit, 8)
        tables[byte][1 << low: 2 << low] = tables[byte][: 1 << low] ^ images[bit]
    return tables


def _square(tables: np.ndarray) -> np.ndarray:
    return _tables_of(_apply(tables, _apply(tables, _BASIS)))


_ONE_ZERO_BYTE = _tables_of(_TABLE[_BASIS & 0xFF] ^ (_BASIS >> 8))


def _zeros_map(count: int) -> np.ndarray:
    """The map "feed ``count`` zero bytes", by repeated squaring."""
    result, step = _tables_of(_BASIS), _ONE_ZERO_BYTE
    while count:
        if count & 1:
            result = _tables_of(_apply(step, _apply(result, _BASIS)))
        count >>= 1
        step = _square(step) if count else step
    return result


def _crc32c_numpy(data: bytes, crc: int = 0) -> int:
    """CRC32C with numpy alone: about 150 MB/s, for when google-crc32c's C extension is missing."""
    raw = np.frombuffer(data, dtype=np.uint8)
    lanes = 1 << max(0, min(16, (len(raw) // 256).bit_length() - 1))
    length = -(-len(raw) // lanes)
    padded = np.zeros(lanes * length, dtype=np.uint8)  # leading zeros leave a zero register at zero
    padded[len(padded) - len(raw):] = raw
    register = np.zeros(lanes, dtype=np.uint32)
    for column in np.ascontiguousarray(padded.reshape(lanes, length).T):
        register = _TABLE[(register ^ column) & 0xFF] ^ (register >> 8)
    shift = _zeros_map(length)
    while len(register) > 1:
        register = _apply(shift, register[0::2]) ^ register[1::2]
        shift = _square(shift) if len(register) > 1 else shift
    start = _apply(_zeros_map(len(raw)), np.array([crc ^ 0xFFFFFFFF], dtype=np.uint32))
    return int(start[0] ^ register[0] ^ 0xFFFFFFFF)


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of ``data``, continuing from ``crc``; google-crc32c's C code when present, else numpy."""
    if google_crc32c is not None and google_crc32c.implementation == "c":
        return google_crc32c.extend(crc, bytes(data))
    return _crc32c_numpy(bytes(data), crc)


def unmask_crc(masked: int) -> int:
    """TF/LevelDB store ``rotate_right(crc, 15) + 0xa282ead8``; undo that."""
    rotated = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


# --- protobuf wire format and the LevelDB table -------------------------------------------------

def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise ValueError("a variable-length integer runs past the end of its record")
        byte = buffer[position]
        value |= (byte & 0x7F) << shift
        position += 1
        shift += 7
        if byte < 0x80:
            return value, position


def _fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field of a serialised protobuf message."""
    position = 0
    while position < len(message):
        key, position = _varint(message, position)
        wire = key & 7
        if wire == 0:
            value, position = _varint(message, position)
        elif wire == 1:
            value, position = int.from_bytes(message[position:position + 8], "little"), position + 8
        elif wire == 2:
            length, position = _varint(message, position)
            value, position = message[position:position + length], position + length
        elif wire == 5:
            value, position = int.from_bytes(message[position:position + 4], "little"), position + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not one TensorFlow writes here")
        if position > len(message):
            raise ValueError("a protobuf field runs past the end of its record")
        yield key >> 3, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True)
class TensorEntry:
    """One variable of the checkpoint, as its ``.index`` entry describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # unmasked CRC32C of the stored bytes
    slices: int  # >0: a partitioned variable, stored in pieces under other keys

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _parse_entry(name: str, value: bytes) -> TensorEntry:
    dtype_code, shape, shard, offset, size, crc, slices = 0, (), 0, 0, 0, 0, 0
    for field, item in _fields(value):
        if field == 1:
            dtype_code = item
        elif field == 2:
            dims = [dim for number, dim in _fields(item) if number == 2]
            shape = tuple(_signed(next((dim_size for n, dim_size in _fields(dim) if n == 1), 0)) for dim in dims)
        elif field == 3:
            shard = item
        elif field == 4:
            offset = item
        elif field == 5:
            size = item
        elif field == 6:
            crc = unmask_crc(item)
        elif field == 7:
            slices += 1
    dtype = DTYPES.get(dtype_code, (f"unsupported TF dtype {dtype_code}", None))[0]
    return TensorEntry(name, dtype, shape, shard, offset, size, crc, slices)


def _prefix_of_file(path: Path) -> Path:
    """The prefix ``path`` belongs to if it is one file of a checkpoint (.index, .meta, .data-*); else ``path``."""
    text = str(path)
    if _DATA_SUFFIX in path.name:
        return Path(text[: text.rindex(_DATA_SUFFIX)])
    return Path(text.removesuffix(path.suffix)) if path.suffix in (".index", ".meta") else path


def checkpoint_prefix(path: str | os.PathLike) -> Path | None:
    """The prefix of the checkpoint that ``path`` names or is one file of; None when there is no such checkpoint."""
    prefix = _prefix_of_file(Path(path))
    return prefix if Path(f"{prefix}.index").is_file() else None


def checkpoints_in(folder: str | os.PathLike) -> list[Path]:
    """The prefixes of the checkpoints in ``folder``; only the newest when TF's ``checkpoint`` file names it."""
    folder = Path(folder)
    indexes = sorted(folder.glob("*.index"))
    state = folder / "checkpoint"  # TF's pointer to the newest checkpoint of a training run
    if len(indexes) > 1 and state.is_file():
        text = state.read_text(encoding="utf-8", errors="replace")
        match = re.search(r'^model_checkpoint_path:\s*"(.+)"', text, re.MULTILINE)
        newest = Path(f"{folder / Path(match.group(1)).name}.index") if match else None
        indexes = [path for path in indexes if path == newest] or indexes
    return [Path(str(path).removesuffix(".index")) for path in indexes]


def resolve_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix ``path`` names, or a ValueError that says which path to give instead."""
    path = Path(path)
    prefix = _prefix_of_file(path)
    if prefix != path:
        raise ValueError(
            f"{path} is one file of a TensorFlow checkpoint; give the checkpoint's prefix instead, i.e. the "
            f"path without .index/.meta/.data-*: {prefix}"
        )
    if Path(f"{path}.index").is_file():
        return path
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the checkpoint prefix inside it (e.g. {path}/model.ckpt-1000000).")
    nearby = sorted(path.parent.glob(f"{path.name}*.index")) if path.parent.is_dir() else []
    hint = f" Did you mean {' or '.join(str(p).removesuffix('.index') for p in nearby[:3])}?" if nearby else ""
    found = "the file exists, but a V2 checkpoint is named by its prefix" if path.is_file() else "not found"
    raise ValueError(
        f"{path}.index: {found}; expected the TensorFlow checkpoint PREFIX, with PREFIX.index and PREFIX.data-* "
        f"beside it.{hint}"
    )


class TFCheckpoint:
    """The variables of one checkpoint: ``entries`` (name -> ``TensorEntry``) and ``read(name)``.

    ``verify_checksums`` (default) checks each table block when opening and each tensor when reading.
    Use as a context manager (or call ``close``) to release the shard files.
    """

    def __init__(self, prefix: str | os.PathLike, *, verify_checksums: bool = True) -> None:
        self.prefix = resolve_prefix(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        self.verify_checksums = verify_checksums
        self.num_shards = 1
        self.table_blocks = 0
        self.entries: dict[str, TensorEntry] = {}
        self._files: dict[int, BinaryIO] = {}
        self._read_index()
        self.shard_paths = [
            Path(f"{self.prefix}{_DATA_SUFFIX}{i:05d}-of-{self.num_shards:05d}") for i in range(self.num_shards)
        ]
        missing = [p.name for p in self.shard_paths if not p.is_file()]
        if missing:
            raise DataFileError(
                self.index_path, None,
                f"the data shard(s) {', '.join(missing)} are missing beside it; copy every file of the checkpoint",
            )
        logger.debug("%s: %d variables, %d shard(s), %d table block(s)", self.prefix, len(self.entries),
                     self.num_shards, self.table_blocks)

    # The .index table: footer -> index block -> data blocks -> entries.
    def _read_index(self) -> None:
        data = self.index_path.read_bytes()
        if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
            found = f"0x{int.from_bytes(data[-8:], 'little'):016x}" if len(data) >= 8 else f"only {len(data)} bytes"
            raise DataFileError(
                self.index_path, None,
                f"not a complete TensorFlow checkpoint index: it should end with the table magic number "
                f"0x{TABLE_MAGIC:016x}, found {found}. The file is truncated (an interrupted download or copy: fetch "
                "it again) or is not a checkpoint .index at all",
            )
        try:
            footer = data[-FOOTER_SIZE:]
            _, position = _varint(footer, _varint(footer, 0)[1])  # skip the metaindex handle
            index_offset, position = _varint(footer, position)
            index_size, _ = _varint(footer, position)
            for _, handle in list(self._block_entries(data, index_offset, index_size)):
                offset, position = _varint(handle, 0)
                for key, value in self._block_entries(data, offset, _varint(handle, position)[0]):
                    self._add_entry(key, value)
                self.table_blocks += 1
        except DataFileError:
            raise
        except (ValueError, UnicodeDecodeError) as error:
            raise DataFileError(self.index_path, None, f"corrupt checkpoint index ({error}); fetch it again") from None

    def _block_entries(self, data: bytes, offset: int, size: int) -> Iterator[tuple[bytes, bytes]]:
        end = offset + size + 5  # the block, its 1-byte compression type, its 4-byte masked CRC32C
        if end > len(data) - FOOTER_SIZE:
            raise ValueError(f"a table block at bytes {offset}-{end} runs past the end of the table")
        block, kind = data[offset:offset + size], data[offset + size]
        if self.verify_checksums:
            stored = unmask_crc(int.from_bytes(data[offset + size + 1:end], "little"))
            if crc32c(data[offset:offset + size + 1]) != stored:
                raise DataFileError(
                    self.index_path, None,
                    f"checksum mismatch in the table block at byte {offset}: the file is corrupt; fetch it again",
                )
        if kind != 0:
            raise ValueError(f"table block compression type {kind} (TensorFlow writes 0, uncompressed)")
        restarts = int.from_bytes(block[-4:], "little") if len(block) >= 4 else -1
        limit = len(block) - 4 - 4 * restarts
        if restarts < 0 or limit < 0:
            raise ValueError(f"a table block of {len(block)} bytes cannot hold {restarts} restart points")
        key, position = b"", 0
        while position < limit:
            shared, position = _varint(block, position)
            unshared, position = _varint(block, position)
            length, position = _varint(block, position)
            if shared > len(key) or position + unshared + length > limit:
                raise ValueError(f"a malformed table entry at byte {offset + position}")
            key = key[:shared] + block[position:position + unshared]
            position += unshared
            yield key, block[position:position + length]
            position += length

    def _add_entry(self, key: bytes, value: bytes) -> None:
        if key == b"":  # BundleHeaderProto: num_shards=1, endianness=2 (0 little, 1 big), version=3
            header = dict(_fields(value))
            self.num_shards = header.get(1, 1)
            if header.get(2, 0) != 0:
                raise DataFileError(
                    self.index_path, None,
                    "a big-endian checkpoint; this reader reads little-endian ones (what x86 and ARM machines write)",
                )
        elif not key.startswith(b"\x00"):  # the pieces of partitioned variables have keys starting with NUL
            name = key.decode("utf-8")
            self.entries[name] = _parse_entry(name, value)

    # The tensors.
    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def variables(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype) of every variable, sorted by name (as ``tf.train.list_variables``)."""
        return [(entry.name, entry.shape, entry.dtype) for entry in self.entries.values()]

    def read_bytes(self, name: str) -> bytes:
        """The stored bytes of variable ``name``, their CRC32C checked (strings: see ``read``)."""
        entry = self._entry(name)
        data = self._stored(entry)
        if self.verify_checksums and entry.dtype != "string" and crc32c(data) != entry.crc32c:
            raise DataFileError(
                self.shard_paths[entry.shard], None,
                f"CRC32C checksum mismatch for {name} (bytes {entry.offset}-{entry.offset + entry.size}): the file "
                "is corrupt; fetch it again",
            )
        return data

    def read(self, name: str) -> np.ndarray:
        """Variable ``name`` as a read-only numpy array (bfloat16 widened exactly to float32; strings as bytes)."""
        entry = self._entry(name)
        if entry.dtype == "string":
            return self._read_strings(entry)
        dtype = np.dtype(DTYPES_BY_NAME[entry.dtype])
        if entry.size != entry.num_elements * dtype.itemsize:
            raise DataFileError(
                self.index_path, None, f"{name}: {entry.size} bytes for shape {list(entry.shape)} of {entry.dtype}"
            )
        array = np.frombuffer(self.read_bytes(name), dtype=dtype).reshape(entry.shape)
        if entry.dtype == "bfloat16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array

    def _entry(self, name: str) -> TensorEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(f"{self.prefix} has no variable {name!r} (`--list` shows its {len(self.entries)})")
        if entry.slices:
            raise DataFileError(
                self.index_path, None,
                f"{name} is a partitioned variable ({entry.slices} slices); this reader reads whole variables only: "
                "re-save the model without a partitioner",
            )
        if entry.dtype not in DTYPES_BY_NAME:
            raise DataFileError(self.index_path, None, f"{name} is of {entry.dtype}, which this reader does not decode")
        if entry.shard >= self.num_shards:
            raise DataFileError(self.index_path, None, f"{name} is in shard {entry.shard} of {self.num_shards}")
        return entry

    def _stored(self, entry: TensorEntry) -> bytes:
        path = self.shard_paths[entry.shard]
        if entry.shard not in self._files:
            self._files[entry.shard] = open(path, "rb")  # noqa: SIM115 (closed by close())
        stream = self._files[entry.shard]
        stream.seek(entry.offset)
        data = stream.read(entry.size)
        if len(data) != entry.size:
            raise DataFileError(
                path, None,
                f"{entry.name} should occupy bytes {entry.offset}-{entry.offset + entry.size}, but the file ends at "
                f"{entry.offset + len(data)}: it is truncated; fetch it again",
            )
        return data

    def _read_strings(self, entry: TensorEntry) -> np.ndarray:
        """[varint64 lengths][masked CRC32C of the lengths][bytes]; the CRC takes the lengths as uint32."""
        data, lengths, position = self._stored(entry), [], 0
        try:
            for _ in range(entry.num_elements):
                length, position = _varint(data, position)
                lengths.append(length)
        except ValueError:
            lengths = None
        body = data[position + 4:]
        intact = lengths is not None and len(body) == sum(lengths)
        if intact and entry.size and self.verify_checksums:
            crc = crc32c(b"".join(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n) for n in lengths))
            intact = crc32c(body, crc32c(data[position:position + 4], crc)) == entry.crc32c
        if not intact:
            raise DataFileError(
                self.shard_paths[entry.shard], None,
                f"CRC32C checksum mismatch for {entry.name}: the file is corrupt; fetch it again",
            )
        ends = np.cumsum(lengths, dtype=np.int64)
        array = np.empty(entry.num_elements, dtype=object)
        array[:] = [body[end - length:end] for end, length in zip(ends, lengths)]
        return array.reshape(entry.shape)

    def object_graph_names(self) -> dict[str, str]:
        """For a TF2 object-based checkpoint: checkpoint key -> the variable's own name (``full_name``)."""
        if OBJECT_GRAPH_KEY not in self.entries:
            return {}
        names = {}
        try:
            for field, node in _fields(self.read(OBJECT_GRAPH_KEY).item()):  # TrackableObjectGraph.nodes = 1
                for number, attribute in _fields(node) if field == 1 else ():  # TrackableObject.attributes = 2
                    parts = dict(_fields(attribute)) if number == 2 else {}  # name=1, full_name=2, checkpoint_key=3
                    if 3 in parts:
                        names[parts[3].decode("utf-8")] = parts.get(2, b"").decode("utf-8")
        except DataFileError:
            raise
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            raise DataFileError(self.index_path, None, f"unreadable TF2 object graph ({error})") from None
        return names

    def close(self) -> None:
        for stream in self._files.values():
            stream.close()
        self._files.clear()

    def __enter__(self) -> TFCheckpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


DTYPES_BY_NAME = {name: dtype for name, dtype in DTYPES.values()}
