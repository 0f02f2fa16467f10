"""The numpy-only TF checkpoint reader, against checkpoints TensorFlow wrote (tests/make_tf_fixtures.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

import ner.sources.tf_checkpoint as tf_checkpoint
from make_tf_fixtures import MANY_COUNT, STRING_VALUES, many_name
from ner.errors import DataFileError
from ner.sources.tf_checkpoint import (
    TFCheckpoint, checkpoint_prefix, checkpoints_in, crc32c, mask_crc, resolve_prefix, unmask_crc,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
BERT = FIXTURES / "uncased_L-2_H-8_A-2" / "bert_model.ckpt"
MANY = FIXTURES / "many_variables" / "model.ckpt"


def load_bench():
    """bench/convert_tf_benchmark.py, whose checkpoint writer the benchmark relies on."""
    path = Path(__file__).resolve().parents[2] / "bench" / "convert_tf_benchmark.py"
    spec = importlib.util.spec_from_file_location("convert_tf_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_checkpoint(prefix: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in prefix.parent.glob(f"{prefix.name}.*"):
        shutil.copy(path, folder / path.name)
    return folder / prefix.name


def test_listing_matches_tensorflow_across_two_shards_and_two_table_blocks():
    expected = json.loads((MANY.parent / "listing.json").read_text())
    expected += [[many_name(i), []] for i in range(MANY_COUNT)]
    with TFCheckpoint(MANY) as checkpoint:
        assert checkpoint.num_shards == 2 and checkpoint.table_blocks == 2
        listed = [[name, list(shape)] for name, shape, _ in checkpoint.variables()]
        assert listed == sorted(expected)
        assert [float(checkpoint.read(many_name(i))) for i in range(MANY_COUNT)] == list(range(MANY_COUNT))


@pytest.mark.parametrize(
    "name, dtype, expected",
    [
        ("typed/float64", "float64", np.array([1.25, -2.5])),
        ("typed/float16", "float16", np.array([[0.5, 1.5, -3.0]], np.float16)),
        ("typed/bfloat16", "bfloat16", np.array([1.5, -2.0, 256.0], np.float32)),  # widened, exactly
        ("typed/int32", "int32", np.array([7, -8, 2**31 - 1], np.int32)),
        ("typed/int64", "int64", np.array(2**40 + 3)),
        ("typed/bool", "bool", np.array([True, False, True])),
        ("typed/empty", "float32", np.zeros((0, 3), np.float32)),
        ("typed/string", "string", np.array([s.encode() for s in STRING_VALUES], dtype=object)),
    ],
)
def test_every_dtype_reads_back(name, dtype, expected):
    with TFCheckpoint(MANY) as checkpoint:
        assert checkpoint.entries[name].dtype == dtype
        value = checkpoint.read(name)
    assert value.shape == expected.shape and value.dtype == expected.dtype
    assert value.tolist() == expected.tolist()


def test_partitioned_variable_is_refused_by_name():
    with TFCheckpoint(MANY) as checkpoint:
        assert checkpoint.entries["partitioned"].shape == (6, 2)
        with pytest.raises(DataFileError, match=r"partitioned is a partitioned variable \(2 slices\); .* partitioner"):
            checkpoint.read("partitioned")


def test_object_based_checkpoint_names():
    with TFCheckpoint(FIXTURES / "tf2_bert" / "ckpt-1") as checkpoint:
        names = checkpoint.object_graph_names()
    assert names["model/encoder/0/.ATTRIBUTES/VARIABLE_VALUE"] == "bert/embeddings/word_embeddings"
    assert names["model/heads/predictions.Soutput_bias/.ATTRIBUTES/VARIABLE_VALUE"] == "cls/predictions/output_bias"
    with TFCheckpoint(BERT) as checkpoint:
        assert checkpoint.object_graph_names() == {}


@pytest.mark.parametrize("size", [0, 1, 3, 255, 256, 4097, 100_003])
def test_numpy_crc32c_matches_google_crc32c(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    for start in (0, 0xDEADBEEF):
        assert tf_checkpoint._crc32c_numpy(data, start) == google_crc32c.extend(start, data)


def test_crc32c_check_value_and_mask():
    assert crc32c(b"123456789") == 0xE3069283 == tf_checkpoint._crc32c_numpy(b"123456789")
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283
    assert unmask_crc(mask_crc(0x12345678)) == 0x12345678 and mask_crc(0) == 0xA282EAD8


def test_reads_and_verifies_without_google_crc32c(monkeypatch, tmp_path):
    monkeypatch.setattr(tf_checkpoint, "google_crc32c", None)
    with TFCheckpoint(BERT) as checkpoint:
        assert checkpoint.read("bert/embeddings/word_embeddings").shape == (64, 8)
    prefix = copy_checkpoint(BERT, tmp_path)
    flip_byte(Path(f"{prefix}.data-00000-of-00001"), 100)
    with TFCheckpoint(prefix) as checkpoint, pytest.raises(DataFileError, match="CRC32C checksum mismatch"):
        for name in checkpoint.entries:
            checkpoint.read(name)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_data_byte_is_a_checksum_error_naming_the_variable(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    with TFCheckpoint(prefix) as checkpoint:
        victim = checkpoint.entries["bert/embeddings/word_embeddings"]
    flip_byte(Path(f"{prefix}.data-00000-of-00001"), victim.offset + 10)
    with TFCheckpoint(prefix) as checkpoint:
        message = r"data-00000-of-00001: CRC32C checksum mismatch for bert/embeddings/word_embeddings"
        with pytest.raises(DataFileError, match=message):
            checkpoint.read("bert/embeddings/word_embeddings")
        checkpoint.read("bert/embeddings/position_embeddings")  # the others are fine
    with TFCheckpoint(prefix, verify_checksums=False) as checkpoint:
        checkpoint.read("bert/embeddings/word_embeddings")


def test_flipped_string_byte_is_a_checksum_error(tmp_path):
    prefix = copy_checkpoint(MANY, tmp_path)
    with TFCheckpoint(prefix) as checkpoint:
        entry = checkpoint.entries["typed/string"]
    flip_byte(Path(f"{prefix}.data-{entry.shard:05d}-of-00002"), entry.offset + entry.size - 3)
    with TFCheckpoint(prefix) as checkpoint, pytest.raises(DataFileError, match="checksum mismatch for typed/string"):
        checkpoint.read("typed/string")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "not a complete TensorFlow checkpoint index.*truncated"),
        (lambda data: data[:-1] + b"\x00", "should end with the table magic number 0xdb4775248b80fb57, found 0x00"),
        (lambda data: b"", "found only 0 bytes"),
        (lambda data: data[:5] + bytes([data[5] ^ 1]) + data[6:], "checksum mismatch in the table block at byte 0"),
    ],
    ids=["truncated", "wrong-magic", "empty", "flipped-index-byte"],
)
def test_damaged_index_is_one_clear_error(tmp_path, damage, message):
    prefix = copy_checkpoint(BERT, tmp_path)
    index = Path(f"{prefix}.index")
    index.write_bytes(damage(index.read_bytes()))
    with pytest.raises(DataFileError, match=message) as caught:
        TFCheckpoint(prefix)
    assert str(caught.value).startswith(f"{index}: ")


def test_truncated_data_shard(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    shard = Path(f"{prefix}.data-00000-of-00001")
    shard.write_bytes(shard.read_bytes()[:1000])
    with TFCheckpoint(prefix) as checkpoint, pytest.raises(DataFileError, match="file ends at 1000: it is truncated"):
        for name in checkpoint.entries:
            checkpoint.read(name)


def test_missing_data_shard(tmp_path):
    prefix = copy_checkpoint(MANY, tmp_path)
    Path(f"{prefix}.data-00001-of-00002").unlink()
    with pytest.raises(DataFileError, match=r"model.ckpt.index: the data shard\(s\) model.ckpt.data-00001-of-00002 are"):
        TFCheckpoint(prefix)


@pytest.mark.parametrize("suffix", [".data-00000-of-00001", ".index", ".meta"])
def test_a_checkpoint_file_instead_of_the_prefix_says_which_prefix(suffix):
    with pytest.raises(ValueError, match=f"is one file of a TensorFlow checkpoint; give the checkpoint's prefix .*: {BERT}$"):
        resolve_prefix(f"{BERT}{suffix}")


def test_unknown_prefix_suggests_the_checkpoints_there(tmp_path):
    prefix = copy_checkpoint(BERT, tmp_path)
    with pytest.raises(ValueError, match=f"bert_model.index: not found; .* Did you mean {prefix}"):
        resolve_prefix(tmp_path / "bert_model")
    with pytest.raises(ValueError, match="is a folder; give the checkpoint prefix inside it"):
        resolve_prefix(tmp_path)
    assert resolve_prefix(prefix) == prefix


@pytest.mark.parametrize("suffix", ["", ".index", ".meta", ".data-00000-of-00001"])
def test_checkpoint_prefix_accepts_the_prefix_or_any_of_its_files(suffix):
    assert checkpoint_prefix(f"{BERT}{suffix}") == BERT
    assert checkpoint_prefix(BERT.parent / "model.ckpt") is None and checkpoint_prefix(BERT.parent) is None


def test_checkpoints_in_a_folder_the_newest_when_tfs_checkpoint_file_names_it(tmp_path):
    first = copy_checkpoint(BERT, tmp_path)
    shutil.copy(f"{BERT}.index", tmp_path / "model.ckpt-9.index")
    assert checkpoints_in(tmp_path) == [first, tmp_path / "model.ckpt-9"]
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-9"\nall_model_checkpoint_paths: "x"\n')
    assert checkpoints_in(tmp_path) == [tmp_path / "model.ckpt-9"]
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gone"\n')  # names none of them: all are listed
    assert len(checkpoints_in(tmp_path)) == 2 and checkpoints_in(tmp_path / "empty") == []


def test_benchmark_writer_reproduces_tensorflows_files_byte_for_byte(tmp_path):
    bench = load_bench()
    with TFCheckpoint(BERT) as checkpoint:
        tensors = [(name, checkpoint.read(name)) for name in checkpoint.entries]
    bench.write_checkpoint(tmp_path / "copy", tensors)
    assert (tmp_path / "copy.index").read_bytes() == Path(f"{BERT}.index").read_bytes()
    assert (tmp_path / "copy.data-00000-of-00001").read_bytes() == Path(f"{BERT}.data-00000-of-00001").read_bytes()
