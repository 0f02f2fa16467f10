"""Time and peak memory of converting a full-size BERT-base TensorFlow checkpoint (110 M parameters).

    python bench/convert_tf_benchmark.py [--optimizer_slots] [--keep DIR] [--out bench/convert_tf.json]

Writes a random BERT-base checkpoint under Google's variable names (plus global_step; with
``--optimizer_slots`` also adam_m/adam_v, as BioBERT v1.1 ships) into a temporary folder, then runs
``convert_tf_to_pytorch.py`` on it in child processes: with the checkpoint evicted from the page cache
(a first conversion), with it cached, and with the numpy CRC32C fallback instead of google-crc32c. Each
run reports its wall time (Python start-up and imports included) and its peak RSS (the child's VmHWM)
next to the checkpoint size; a child that only imports what the converter imports gives the floor.
Prints the figures and writes them as JSON; asserts nothing about time.

The checkpoint is written by ``write_checkpoint`` below, a minimal TensorFlow ``BundleWriter`` /
LevelDB ``TableBuilder``; tests/sources/test_tf_checkpoint.py checks that it reproduces the files TensorFlow
itself wrote for tests/fixtures/tf/uncased_L-2_H-8_A-2 byte for byte, so no TensorFlow is needed here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ner.sources.tf_checkpoint import TABLE_MAGIC, crc32c, mask_crc  # noqa: E402

BERT_BASE = {
    "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 512, "num_attention_heads": 12,
    "num_hidden_layers": 12, "type_vocab_size": 2, "vocab_size": 30522,
}
_TF_DTYPES = {np.dtype("float32"): 1, np.dtype("int32"): 3, np.dtype("int64"): 9, np.dtype("float16"): 19}


# --- a minimal TensorFlow checkpoint writer --------------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry_proto(array: np.ndarray, offset: int, size: int, crc: int) -> bytes:
    shape = b"".join(_field(2, _field(1, dim)) for dim in array.shape)
    proto = _field(1, _TF_DTYPES[array.dtype]) + _field(2, shape)
    proto += (_field(4, offset) if offset else b"") + (_field(5, size) if size else b"")
    return proto + _varint(6 << 3 | 5) + mask_crc(crc).to_bytes(4, "little")


class _Block:
    """LevelDB block: prefix-compressed keys, a restart point every ``interval`` entries."""

    def __init__(self, interval: int) -> None:
        self.interval, self.buffer, self.restarts, self.count, self.last = interval, bytearray(), [0], 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.interval:
            while shared < min(len(key), len(self.last)) and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.count = 0
        self.buffer += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        self.last, self.count = key, self.count + 1

    def size(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        restarts = b"".join(offset.to_bytes(4, "little") for offset in self.restarts)
        return bytes(self.buffer) + restarts + len(self.restarts).to_bytes(4, "little")


def _separator(start: bytes, limit: bytes) -> bytes:
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)) and start[common] < 0xFF and start[common] + 1 < limit[common]:
        return start[:common] + bytes([start[common] + 1])
    return start


def _successor(key: bytes) -> bytes:
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _write_table(path: str, items: list[tuple[bytes, bytes]], block_size: int = 262144) -> None:
    """TF's TableBuilder: data blocks of ~256 KiB, an empty metaindex block, the index block, the footer."""
    out, data, index = bytearray(), _Block(16), _Block(1)
    pending = None  # (handle, last key) of a flushed data block whose index entry waits for the next key

    def flush(block: _Block) -> bytes:
        raw = block.finish() + b"\x00"  # the block, then its compression type: none
        handle = _varint(len(out)) + _varint(len(raw) - 1)
        out.extend(raw + mask_crc(crc32c(raw)).to_bytes(4, "little"))
        return handle

    for key, value in items:
        if pending is not None:
            index.add(_separator(pending[1], key), pending[0])
            pending = None
        data.add(key, value)
        if data.size() >= block_size:
            pending, data = (flush(data), data.last), _Block(16)
    if data.buffer:
        pending = (flush(data), data.last)
    metaindex = flush(_Block(16))
    if pending is not None:
        index.add(_successor(pending[1]), pending[0])
    out_index = flush(index)
    out.extend((metaindex + out_index).ljust(40, b"\x00") + TABLE_MAGIC.to_bytes(8, "little"))
    Path(path).write_bytes(bytes(out))


def write_checkpoint(prefix: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]]) -> None:
    """A one-shard TF V2 checkpoint of ``tensors`` (given in name order), laid out as TensorFlow does."""
    items, offset = [(b"", _field(1, 1) + _field(3, _field(1, 1)))], 0  # header: num_shards 1, version {producer 1}
    with open(f"{prefix}.data-00000-of-00001", "wb") as stream:
        for name, array in tensors:
            data = np.ascontiguousarray(array).tobytes()
            stream.write(data)
            items.append((name.encode(), _entry_proto(array, offset, len(data), crc32c(data))))
            offset += len(data)
    if [key for key, _ in items] != sorted(key for key, _ in items):
        raise ValueError("write_checkpoint needs the tensors in name order, as TensorFlow writes them")
    _write_table(f"{prefix}.index", items)


# --- the benchmark -------------------------------------------------------------------------------

def bert_shapes(config: dict, *, optimizer_slots: bool) -> dict[str, tuple[int, ...]]:
    from ner.sources.tf_conversion import RULES

    sizes = {**config, "num_labels": 0}
    shapes = {}
    for rule in RULES:
        if rule.group == "classifier":
            continue
        for n in range(config["num_hidden_layers"]) if "{n}" in rule.tf_name else [None]:
            shape = tuple(sizes[s] if isinstance(s, str) else s for s in rule.shape)
            shapes[rule.tf_name.format(n=n)] = shape
            if optimizer_slots:
                shapes[f"{rule.tf_name.format(n=n)}/adam_m"] = shapes[f"{rule.tf_name.format(n=n)}/adam_v"] = shape
    return shapes


def write_bert_base(folder: Path, *, optimizer_slots: bool, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bert_config.json").write_text(json.dumps(BERT_BASE, indent=2))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(BERT_BASE["vocab_size"] - 5)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    rng = np.random.default_rng(seed)
    shapes = bert_shapes(BERT_BASE, optimizer_slots=optimizer_slots)

    def tensors():
        for name in sorted([*shapes, "global_step"]):
            if name == "global_step":
                yield name, np.array(1_000_000, dtype=np.int64)
            else:
                yield name, (rng.standard_normal(shapes[name], dtype=np.float32) * 0.02)

    prefix = folder / "bert_model.ckpt"
    write_checkpoint(prefix, tensors())
    return prefix


def run_child(code: str, *args: str) -> dict:
    """Wall and CPU seconds and peak RSS (bytes) of ``python -c code args``.

    The peak is the child's own VmHWM, read as it exits: rusage's ru_maxrss would also count the pages the
    child inherited from this (large) process at fork time. CPU seconds (user + system) are what a shared,
    busy machine distorts least.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as report:
        wrapped = (
            f"import atexit, sys\n"
            f"def _report():\n"
            f"    status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
            f"    open({report.name!r}, 'w').write(status)\n"
            f"atexit.register(_report)\n{code}"
        )
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", wrapped, *args], cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the child failed ({os.waitstatus_to_exitcode(status)}): {code} {' '.join(args)}")
        peak = int(Path(report.name).read_text()) * 1024  # kB
    return {"seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss": peak}


def evict_from_page_cache(paths: Iterable[Path]) -> None:
    """So that the next read comes from the disk, as on a first conversion."""
    for path in paths:
        with open(path, "rb") as stream:
            os.fsync(stream.fileno())
            os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


CONVERT = "import sys; from convert_tf_to_pytorch import main; sys.exit(main(sys.argv[1:]))"
NUMPY_CRC = "import ner.sources.tf_checkpoint as reader; reader.google_crc32c = None; " + CONVERT
IMPORTS = "import numpy, tqdm, google_crc32c; from transformers import BertConfig, BertTokenizerFast, HfArgumentParser"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer_slots", action="store_true", help="also write adam_m/adam_v (3x the size)")
    parser.add_argument("--keep", type=Path, default=None, help="write the checkpoint here and keep it")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "convert_tf.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="convert-tf-bench-") as scratch:
        folder = args.keep or Path(scratch) / "bert_base"
        started = time.perf_counter()
        write_bert_base(folder, optimizer_slots=args.optimizer_slots)
        written = time.perf_counter() - started
        files = sorted(folder.glob("bert_model.ckpt.*"))
        checkpoint_bytes = sum(path.stat().st_size for path in files)
        imports_only = run_child(IMPORTS)
        runs = {}
        for name, code, cold in (("cold_cache", CONVERT, True), ("warm_cache", CONVERT, False),
                                 ("warm_cache_numpy_crc32c", NUMPY_CRC, False)):
            if cold:
                evict_from_page_cache(files)
            output = Path(scratch) / name
            run = run_child(code, str(folder), "--output_dir", str(output))
            rss = run.pop("peak_rss")
            runs[name] = {
                **run, "peak_rss_mb": round(rss / 1e6, 1), "peak_rss_over_checkpoint": round(rss / checkpoint_bytes, 2)
            }
            print(name, json.dumps(runs[name]), flush=True)
        output_bytes = (Path(scratch) / "warm_cache" / "model.safetensors").stat().st_size
    result = {
        "benchmark": "convert_tf_to_pytorch.py on a random BERT-base checkpoint (wall time includes Python start-up)",
        "parameters": sum(int(np.prod(shape)) for shape in bert_shapes(BERT_BASE, optimizer_slots=False).values()),
        "optimizer_slots": args.optimizer_slots,
        "checkpoint_mb": round(checkpoint_bytes / 1e6, 1),
        "safetensors_mb": round(output_bytes / 1e6, 1),
        **runs,
        "imports_only": {"seconds": imports_only["seconds"], "cpu_seconds": imports_only["cpu_seconds"],
                         "peak_rss_mb": round(imports_only["peak_rss"] / 1e6, 1)},
        "checkpoint_write_seconds": round(written, 1),
        "machine": machine(),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
