"""Tests for ner/data/conll.py: the CoNLL reader, its error messages, and the cached datasets builder."""

from __future__ import annotations

import io
import logging
import os
import random
import re
import string
from pathlib import Path

import pytest

from ner.data import conll
from ner.data.conll import FEATURES, Sentence, load_conll, read_conll
from ner.errors import DataFileError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

# set, split, sentences, tokens, documents (from shared/data/README.md)
REAL_COUNTS = [
    ("conll2003", "train", 14_041, 203_621, 946),
    ("conll2003", "dev", 3_250, 51_362, 216),
    ("conll2003", "test", 3_453, 46_435, 231),
    ("ncbi_disease", "train", 5_424, 135_701, 1),
    ("ncbi_disease", "dev", 923, 23_969, 1),
    ("ncbi_disease", "test", 940, 24_497, 1),
]


def shared_file(name: str, split: str) -> Path:
    path = DATA / name / f"{split}.txt"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the real-data tests need the shared data folder beside the repository")
    return path


def write(tmp_path: Path, data: bytes | str, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def counts(sentences: list[Sentence]) -> tuple[int, int, int]:
    return len(sentences), sum(len(s.words) for s in sentences), len({s.document_id for s in sentences})


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(("name", "split", "n_sentences", "n_tokens", "n_documents"), REAL_COUNTS)
def test_real_data_counts(name: str, split: str, n_sentences: int, n_tokens: int, n_documents: int) -> None:
    sentences = list(read_conll(shared_file(name, split)))
    assert counts(sentences) == (n_sentences, n_tokens, n_documents)
    # document ids are contiguous from 0 and each document starts with doc_start (if it has any)
    assert sorted({s.document_id for s in sentences}) == list(range(n_documents))
    assert sum(s.doc_start for s in sentences) == (n_documents if name == "conll2003" else 0)


@pytest.mark.integration
def test_real_data_through_builder(tmp_path: Path) -> None:
    files = {"train": "train", "validation": "dev", "test": "test"}
    splits = load_conll({key: str(shared_file("conll2003", s)) for key, s in files.items()}, cache_dir=str(tmp_path))
    expected = {row[1]: row[2:] for row in REAL_COUNTS if row[0] == "conll2003"}
    for key, split in files.items():
        dataset = splits[key]
        found = (dataset.num_rows, sum(map(len, dataset["words"])), len(set(dataset["document_id"])))
        assert found == expected[split], key
    first = splits["train"][0]
    assert first == {
        "words": ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        "tags": ["I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "O"],
        "document_id": 0,
        "doc_start": True,
        "line": 3,
    }


# --- format variants ---------------------------------------------------------------------------

# id, file bytes, read_conll options, sentences, tokens, first sentence (words, tags)
VARIANTS = [
    ("spaces", b"EU NNP I-ORG\nrejects VBZ O\n\nPeter NNP B-PER\n", {}, 2, 3, (["EU", "rejects"], ["I-ORG", "O"])),
    ("tabs", b"a\tO\nb\tB-X\n\nc\tO\n", {}, 2, 3, (["a", "b"], ["O", "B-X"])),
    ("tab keeps spaces in words", b"New York\tB-LOC\n", {}, 1, 1, (["New York"], ["B-LOC"])),
    ("tab fields stripped", b"a  \t O \n", {}, 1, 1, (["a"], ["O"])),
    ("space runs", b"  a   x  O  \n", {}, 1, 1, (["a"], ["O"])),
    ("extra middle columns", b"a x y z S-LOC\nb x y z O\n", {}, 1, 2, (["a", "b"], ["S-LOC", "O"])),
    ("crlf", b"a O\r\nb U-ORG\r\n\r\nc O\r\n", {}, 2, 3, (["a", "b"], ["O", "U-ORG"])),
    ("bom", b"\xef\xbb\xbfa O\nb O\n", {}, 1, 2, (["a", "b"], ["O", "O"])),
    ("bom and crlf tabs", b"\xef\xbb\xbfa\tO\r\n\r\nb\tO\r\n", {}, 2, 2, (["a"], ["O"])),
    ("no final newline", b"a O\n\nb E-X", {}, 2, 2, (["a"], ["O"])),
    ("whitespace-only separators", b"a O\n \t \nb O\n  \n\nc O\n", {}, 3, 3, (["a"], ["O"])),
    ("several blank lines", b"\n\n\na O\n\n\n\nb O\n\n\n", {}, 2, 2, (["a"], ["O"])),
    ("untyped tags", b"a B\nb I\nc L\n", {}, 1, 3, (["a", "b", "c"], ["B", "I", "L"])),
    ("unicode words", "Zürich\tB-LOC\n–\tO\n".encode(), {}, 1, 2, (["Zürich", "–"], ["B-LOC", "O"])),
    ("docstart at start", b"-DOCSTART- -X- O O\n\na O\n\nb O\n", {}, 2, 2, (["a"], ["O"])),
    ("docstart in middle", b"a O\n\n-DOCSTART- -X- -X- O\n\nb O\n", {}, 2, 2, (["a"], ["O"])),
    ("label_column chosen", b"a B-X NNP\nb O VB\n", {"label_column": 1}, 1, 2, (["a", "b"], ["B-X", "O"])),
    ("word_column chosen", b"1 a O\n2 b O\n", {"word_column": 1}, 1, 2, (["a", "b"], ["O", "O"])),
    ("negative columns", b"a O x\n", {"word_column": -3, "label_column": -2}, 1, 1, (["a"], ["O"])),
    ("explicit space delimiter", b"a\tb O\n", {"delimiter": " "}, 1, 1, (["a\tb"], ["O"])),
    ("explicit tab delimiter", b"a b\tO\n", {"delimiter": "\t"}, 1, 1, (["a b"], ["O"])),
    # U+FEFF is data inside a word, wherever it sits; only the file's first one is a byte order mark.
    ("feff ending a word", "Dubbz\ufeff\tB-person\n".encode(), {}, 1, 1, (["Dubbz\ufeff"], ["B-person"])),
    ("feff starting a later line", "a\tO\n\ufeffb\tO\n".encode(), {}, 1, 2, (["a", "\ufeffb"], ["O", "O"])),
    ("feff starting a later column", "1\ta\tO\n2\t\ufeffb\tO\n".encode(), {"word_column": 1}, 1, 2,
     (["a", "\ufeffb"], ["O", "O"])),
    ("bom then feff word", b"\xef\xbb\xbf" + "\ufeffa O\n".encode(), {}, 1, 1, (["\ufeffa"], ["O"])),
    ("feff alone is a blank line", "a O\n\ufeff\nb O\n".encode(), {}, 2, 2, (["a"], ["O"])),
    ("bom of a concatenated file", b"a O\n\n\xef\xbb\xbf-DOCSTART- -X- O O\n\nb O\n", {}, 2, 2, (["a"], ["O"])),
    ("zero width space", "a\u200bb O\n".encode(), {}, 1, 1, (["a\u200bb"], ["O"])),
    ("no tag column", b"a x\nb y\n\nc z\n", {"label_column": None}, 2, 3, (["a", "b"], None)),
]


@pytest.mark.parametrize(
    ("data", "options", "n_sentences", "n_tokens", "first"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS]
)
def test_format_variants(
    tmp_path: Path, data: bytes, options: dict, n_sentences: int, n_tokens: int, first: tuple
) -> None:
    sentences = list(read_conll(write(tmp_path, data), **options))
    assert counts(sentences)[:2] == (n_sentences, n_tokens)
    assert all(s.words for s in sentences)
    assert (sentences[0].words, sentences[0].tags) == first


def test_documents_and_line_numbers(tmp_path: Path) -> None:
    text = (
        "-DOCSTART- -X- O O\n"  # 1: before any sentence: no empty document 0
        "\n"
        "a O\n"  # 3
        "b O\n"
        "\n"
        "c O\n"  # 6
        "-DOCSTART- -X- -X- O\n"  # 7: ends the sentence without a blank line
        "\n"
        "-DOCSTART-\n"  # 9: a second boundary with no sentence between opens no empty document
        "d O\n"  # 10
        "\n\n"
        "e O\n"  # 13
    )
    found = [(s.words, s.document_id, s.doc_start, s.line) for s in read_conll(write(tmp_path, text))]
    assert found == [
        (["a", "b"], 0, True, 3),
        (["c"], 0, False, 6),
        (["d"], 1, True, 10),
        (["e"], 1, False, 13),
    ]


def test_without_docstart_everything_is_document_0(tmp_path: Path) -> None:
    sentences = list(read_conll(write(tmp_path, b"\r\na O\r\n\r\nb O\r\nc O\r\n")))
    assert [(s.document_id, s.doc_start, s.line) for s in sentences] == [(0, False, 2), (0, False, 4)]


def test_feff_inside_a_word_is_kept_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """WNUT-17's dev file has `Dubbz\\ufeff` tagged B-person: a standard corpus must read, word intact."""
    path = write(tmp_path, "-DOCSTART-\tO\n\nI\tO\nlike\tO\nDubbz\ufeff\tB-person\n\nx\u200by\tO\n")
    with caplog.at_level(logging.INFO, logger="ner.data.conll"):
        sentences = list(read_conll(path))
    assert sentences[0].words == ["I", "like", "Dubbz\ufeff"]
    assert sentences[0].words[2].encode() == b"Dubbz\xef\xbb\xbf"  # byte for byte
    assert sentences[0].tags == ["O", "O", "B-person"]
    assert sentences[1].words == ["x\u200by"]
    lines = [r.getMessage() for r in caplog.records if r.name == "ner.data.conll"]
    assert len(lines) == 1  # once per file, not once per word
    assert lines[0].startswith(f"{path}: 2 words hold invisible characters") and "the first on line 5" in lines[0]


def test_concatenated_files_keep_their_documents(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`cat a.txt b.txt`, b.txt with a BOM: its -DOCSTART- still opens a document, no word holds the BOM."""
    part = b"\xef\xbb\xbf-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n\n"
    path = write(tmp_path, part + part)
    with caplog.at_level(logging.INFO, logger="ner.data.conll"):
        sentences = list(read_conll(path))
    assert [(s.words, s.document_id, s.doc_start) for s in sentences] == [(["EU"], 0, True), (["EU"], 1, True)]
    assert any("1 byte order marks (U+FEFF) before -DOCSTART- or on a blank line were ignored" in r.getMessage()
               and "the first on line 5" in r.getMessage() for r in caplog.records)


def test_clean_file_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ner.data.conll"):
        list(read_conll(write(tmp_path, "\ufeffZürich\xa0x\tB-LOC\n".encode())))  # a file BOM, a non-breaking space
    assert [r for r in caplog.records if r.name == "ner.data.conll"] == []


# --- files without tags (input to prediction) ----------------------------------------------------

# id, file bytes, sentences as (words, tags)
OPTIONAL_TAGS = [
    ("one column", b"EU\nrejects\n\nPeter\n", [(["EU", "rejects"], None), (["Peter"], None)]),
    ("word and POS", b"-DOCSTART- -X-\n\nEU NNP\nrejects VBZ\n", [(["EU", "rejects"], None)]),
    ("word and POS, tabs", b"EU\tNNP\n\nPeter\tNNP\n", [(["EU"], None), (["Peter"], None)]),
    ("tagged", b"EU\tB-ORG\nrejects\tO\n", [(["EU", "rejects"], ["B-ORG", "O"])]),
    ("conll-2003", b"-DOCSTART- -X- -X- O\n\nEU NNP B-NP I-ORG\n", [(["EU"], ["I-ORG"])]),
]


@pytest.mark.parametrize(("data", "expected"), [o[1:] for o in OPTIONAL_TAGS], ids=[o[0] for o in OPTIONAL_TAGS])
def test_optional_tags_are_decided_per_file(tmp_path: Path, data: bytes, expected: list) -> None:
    sentences = list(read_conll(write(tmp_path, data), tags_optional=True))
    assert [(s.words, s.tags) for s in sentences] == expected


# id, file bytes, line named, message pattern
MIXED = [
    ("tag after none", b"EU NNP\nrejects VBZ\n\nPeter B-PER\n", 4,
     r"column 1 holds the tag 'B-PER', but on line 1 \(the first token line\) it holds 'NNP', which is not a tag, "
     r"so the file is read as words without gold tags; give every token line a tag or none"),
    ("none after a tag", b"EU B-ORG\nrejects VBZ\n", 2,
     r"'VBZ' in column 1 is not a tag, but line 1 \(the first token line\) has the tag 'B-ORG' there, so the file "
     r"is read with gold tags; give every token line a tag \(`O` outside entities\) or none"),
    ("columns after one", b"EU\nrejects\n\nPeter\tB-PER\n", 4,
     r"expected 1 column \(as on line 1, the first token line, so the file is read as words without gold tags\), "
     r"found 2: 'Peter\\tB-PER'"),
    ("one after columns", b"EU\tB-ORG\n\nPeter\n", 3, r"expected 2 columns \(as on line 1, the first token line\), found 1"),
    ("empty", b"\n\n", None, r"no sentences found: .* expected token lines such as `word<TAB>tag` or `word`"),
]


@pytest.mark.parametrize(("data", "line", "pattern"), [m[1:] for m in MIXED], ids=[m[0] for m in MIXED])
def test_optional_tags_refuse_a_file_that_mixes(tmp_path: Path, data: bytes, line: int | None, pattern: str) -> None:
    path = write(tmp_path, data)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    with pytest.raises(DataFileError, match=re.escape(where) + pattern):
        list(read_conll(path, tags_optional=True))


def test_training_reader_still_needs_tags(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r":1: found 1 column, but a label column is needed"):
        list(read_conll(write(tmp_path, b"EU\nrejects\n")))
    with pytest.raises(DataFileError, match=r":1: unsupported tag 'NNP'"):
        list(read_conll(write(tmp_path, b"EU NNP\n")))


def test_line_numbers_count_a_bom_line(tmp_path: Path) -> None:
    sentences = list(read_conll(write(tmp_path, b"\xef\xbb\xbf\n\na O\n")))
    assert sentences[0].line == 3


def test_empty_delimiter_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="delimiter must be None"):
        read_conll(write(tmp_path, "a O\n"), delimiter="")


# A word may hold anything but ASCII whitespace; non-ASCII spaces (\xa0, \u2009, \u3000),
# Unicode line breaks (\x85, \u2028) and control characters (\x1c) must stay inside it.
_WORD_CHARACTERS = (
    string.ascii_letters + string.digits + string.punctuation + "äßé中–\xa0\u2009\u3000\x85\u2028\x1c"
)
_TAGS = ["O", "B-PER", "I-PER", "S-LOC", "E-LOC", "U-X", "L-X", "B", "I"]


def random_file(rng: random.Random) -> tuple[bytes, list[tuple[list[str], list[str]]]]:
    def token() -> tuple[str, str]:
        return "".join(rng.choices(_WORD_CHARACTERS, k=rng.randint(1, 4))), rng.choice(_TAGS)

    sentences = [[token() for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 6))]
    separator = rng.choice(["\t", " ", "  ", " \t "])
    blank = rng.choice(["", " ", "\t"])
    lines: list[str] = []
    for tokens in sentences:
        lines += [f"{word}{separator}{tag}" for word, tag in tokens]
        lines += [blank] * rng.randint(1, 3)
    if rng.random() < 0.5:
        lines.pop()  # no blank line after the last sentence
    newline = rng.choice(["\n", "\r\n"])
    text = newline.join(lines) + rng.choice(["", newline])  # with or without a final newline
    expected = [([word for word, _ in tokens], [tag for _, tag in tokens]) for tokens in sentences]
    return text.encode(), expected


def test_round_trip_keeps_every_token(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    for seed in range(300):
        data, expected = random_file(random.Random(seed))
        path.write_bytes(data)
        assert [(s.words, s.tags) for s in read_conll(path)] == expected, f"seed {seed}: {data!r}"


# --- malformed files ---------------------------------------------------------------------------

_UTF16 = "a O\n".encode("utf-16")

# id, file bytes, read_conll options, line named in the message (None: whole file), message pattern
MALFORMED = [
    ("ragged line", b"a x O\nb O\n", {}, 2,
     r"expected 3 columns \(as on line 1, the first token line\), found 2: 'b O'"),
    ("ragged after docstart", b"-DOCSTART- -X- O O\n\na\tO\n\nb\tx\tO\n", {}, 5, r"expected 2 columns .* found 3"),
    ("one column only", b"a\nb\n", {}, 1, r"found 1 column, but a label column is needed"),
    ("explicit tab on spaces", b"a O\n", {"delimiter": "\t"}, 1, r"found 1 column, but a label column is needed"),
    ("empty field", b"a\t\tO\n", {}, 1, r"column 1 is empty: 'a\\t\\tO'"),
    ("trailing tab", b"a\tO\nb\tO\t\n", {}, 2, r"expected 2 columns .* found 3"),
    ("empty field later", b"a\tx\tO\n\nb\t\tO\n", {}, 3, r"column 1 is empty"),
    ("io tag", b"a O\nb PER\n", {}, 2, r"unsupported tag 'PER' in column 1 \(label_column=-1\): accepted tags .*"
     r"IO-only tags such as `PER` are not supported, convert the file to BIO first"),
    ("bare prefix", b"a B-\n", {}, 1, r"unsupported tag 'B-'"),
    ("unknown prefix", b"a X-PER\n", {}, 1, r"unsupported tag 'X-PER'"),
    ("label column is pos", b"a NNP O\n", {"label_column": 1}, 1,
     r"unsupported tag 'NNP' in column 1 \(label_column=1\)"),
    ("latin-1", b"a O\ncaf\xe9 O\n", {}, 2, r"the file is not UTF-8: byte 0xe9 at byte offset 3 of the line .*"
     r"iconv -f latin1 -t utf-8"),
    ("nul byte", b"a O\nb\x00 O\n", {}, 2, r"NUL byte at byte offset 1 of the line: this looks like a binary"),
    ("utf-16", _UTF16, {}, 1, r"NUL byte at byte offset 3 of the line: this looks like a binary \(or UTF-16\)"),
    ("empty file", b"", {}, None, r"no sentences found"),
    ("only blank lines", b"\n  \n\t\n\n", {}, None, r"no sentences found"),
    ("only docstart", b"-DOCSTART- -X- O O\n\n", {}, None, r"no sentences found"),
    ("label column out of range", b"a O\n", {"label_column": 2}, 1,
     r"label_column=2 is out of range: the first token line has 2 columns \(use 0..1, or -2..-1"),
    ("word column out of range", b"-DOCSTART- -X- O O\n\na x O\n", {"word_column": -4}, 3,
     r"word_column=-4 is out of range: the first token line has 3 columns"),
    ("same column", b"a O\n", {"word_column": 1}, 1, r"word_column=1 and label_column=-1 are the same column \(1\)"),
]


@pytest.mark.parametrize(
    ("data", "options", "line", "pattern"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_files(tmp_path: Path, data: bytes, options: dict, line: int | None, pattern: str) -> None:
    path = write(tmp_path, data)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    with pytest.raises(DataFileError, match=re.escape(where) + pattern) as raised:
        list(read_conll(path, **options))
    assert (raised.value.path, raised.value.line) == (str(path), line)


def test_long_ragged_line_is_cut(tmp_path: Path) -> None:
    path = write(tmp_path, "a O\n" + "w" * 200 + " x O\n")
    with pytest.raises(DataFileError, match=r"found 3: 'w+\.\.\.$") as raised:
        list(read_conll(path))
    assert len(raised.value.detail.split(": ", 1)[1]) == 80


# --- builder and cache -------------------------------------------------------------------------


def three_splits(tmp_path: Path) -> dict[str, str]:
    return {
        "train": str(write(tmp_path, "-DOCSTART- -X- O O\n\nEU I-ORG\nrejects O\n\nPeter B-PER\n", "train.txt")),
        "validation": str(write(tmp_path, "a\tO\n\nb\tB-X\nc\tI-X\n", "dev.txt")),
        "test": str(write(tmp_path, "x O\n", "test.txt")),
    }


def test_load_conll_splits_and_features(tmp_path: Path) -> None:
    splits = load_conll(three_splits(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert sorted(splits) == ["test", "train", "validation"]
    assert all(dataset.features == FEATURES for dataset in splits.values())
    assert splits["train"].to_list() == [
        {"words": ["EU", "rejects"], "tags": ["I-ORG", "O"], "document_id": 0, "doc_start": True, "line": 3},
        {"words": ["Peter"], "tags": ["B-PER"], "document_id": 0, "doc_start": False, "line": 6},
    ]
    assert splits["validation"]["tags"] == [["O"], ["B-X", "I-X"]]
    assert splits["test"].num_rows == 1
    assert (tmp_path / "cache" / "conll").is_dir()


def test_load_conll_logs_one_line_per_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = three_splits(tmp_path)
    with caplog.at_level(logging.INFO, logger="ner.data.conll"):
        load_conll(files, cache_dir=str(tmp_path / "cache"))
    lines = [r.getMessage() for r in caplog.records if r.name == "ner.data.conll"]
    assert lines == [
        f"train: {files['train']}: 2 sentences, 3 tokens, 1 documents",
        f"validation: {files['validation']}: 2 sentences, 3 tokens, 1 documents",
        f"test: {files['test']}: 1 sentences, 1 tokens, 1 documents",
    ]


def refuse_to_parse(*args: object, **kwargs: object) -> None:
    raise AssertionError("read_conll was called: the Arrow cache was not reused")


def test_unchanged_files_come_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, cache = three_splits(tmp_path), str(tmp_path / "cache")
    first = load_conll(files, cache_dir=cache)
    monkeypatch.setattr(conll, "read_conll", refuse_to_parse)
    second = load_conll(files, cache_dir=cache)
    assert {k: d.to_list() for k, d in second.items()} == {k: d.to_list() for k, d in first.items()}


def test_changed_file_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, cache = three_splits(tmp_path), str(tmp_path / "cache")
    load_conll(files, cache_dir=cache)
    test_file = Path(files["test"])
    mtime_ns = test_file.stat().st_mtime_ns
    test_file.write_text("x O\ny O\n\nz B-X\n")
    os.utime(test_file, ns=(mtime_ns + 10**9, mtime_ns + 10**9))
    assert load_conll(files, cache_dir=cache)["test"]["words"] == [["x", "y"], ["z"]]
    # and the new content is cached in turn
    monkeypatch.setattr(conll, "read_conll", refuse_to_parse)
    assert load_conll(files, cache_dir=cache)["test"]["words"] == [["x", "y"], ["z"]]


def test_changed_content_with_the_same_mtime_is_parsed_again(tmp_path: Path) -> None:
    files, cache = three_splits(tmp_path), str(tmp_path / "cache")
    load_conll(files, cache_dir=cache)
    test_file = Path(files["test"])
    stat = test_file.stat()
    test_file.write_text("q O\n")  # same size, mtime set back: only the content hash sees it
    os.utime(test_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_conll(files, cache_dir=cache)["test"]["words"] == [["q"]]


def test_changed_options_are_parsed_again(tmp_path: Path) -> None:
    path = str(write(tmp_path, "a B-X 1\n", "train.txt"))
    cache = str(tmp_path / "cache")
    assert load_conll({"train": path}, cache_dir=cache, label_column=1)["train"]["tags"] == [["B-X"]]
    with pytest.raises(DataFileError, match=re.escape(f"{path}:1: ") + "unsupported tag '1'"):
        load_conll({"train": path}, cache_dir=cache)


def test_changed_parser_code_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, cache = three_splits(tmp_path), str(tmp_path / "cache")
    load_conll(files, cache_dir=cache)
    monkeypatch.setattr(conll, "_source_hash", lambda: "0123456789abcdef")
    calls = []
    monkeypatch.setattr(conll, "read_conll", lambda *args, **kwargs: calls.append(args) or read_conll(*args, **kwargs))
    load_conll(files, cache_dir=cache)
    assert len(calls) == 3


def test_load_conll_raises_the_reader_error(tmp_path: Path) -> None:
    files = three_splits(tmp_path)
    Path(files["validation"]).write_text("a\tO\nb\tO\tx\n")
    with pytest.raises(DataFileError, match=re.escape(f"{files['validation']}:2: expected 2 columns")):
        load_conll(files, cache_dir=str(tmp_path / "cache"))


def test_load_conll_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train file not found: .*nope.txt"):
        load_conll({"train": str(tmp_path / "nope.txt")}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="data_files is empty"):
        load_conll({}, cache_dir=str(tmp_path / "cache"))


def test_load_conll_takes_file_names_literally(tmp_path: Path) -> None:
    path = write(tmp_path, "a O\n", "train[1].txt")
    assert load_conll({"train": str(path)}, cache_dir=str(tmp_path / "cache"))["train"]["words"] == [["a"]]


# --- writing -------------------------------------------------------------------------------------


def test_predictions_file_is_word_gold_predicted_with_docstart_kept(tmp_path: Path) -> None:
    path = tmp_path / "eval_predictions.txt"
    words = [["EU", "rejects"], ["Peter"], ["New York", "x"]]  # written as given: the predictions file checks nothing
    gold = [["B-ORG", "O"], ["B-PER"], ["B-LOC", "O"]]
    predicted = [["B-ORG", "B-ORG"], ["O"], ["O", "O"]]
    conll.write_predictions(path, words, gold, predicted, [True, False, True])
    assert path.read_bytes() == (
        b"-DOCSTART-\tO\tO\n\nEU\tB-ORG\tB-ORG\nrejects\tO\tB-ORG\n\nPeter\tB-PER\tO\n\n"
        b"-DOCSTART-\tO\tO\n\nNew York\tB-LOC\tO\nx\tO\tO\n\n"
    )


@pytest.mark.parametrize(
    "columns, doc_start, delimiter, expected",
    [
        ((["a", "b"], ["B-X", "O"]), False, "\t", "a\tB-X\nb\tO\n\n"),
        ((["a"], ["O"]), True, " ", "-DOCSTART- O\n\na O\n\n"),
        ((["a"], ["B-X"], ["O"]), True, "\t", "-DOCSTART-\tO\tO\n\na\tB-X\tO\n\n"),
    ],
)
def test_write_sentence_layout(columns: tuple, doc_start: bool, delimiter: str, expected: str) -> None:
    stream = io.StringIO()
    conll.write_sentence(stream, columns, doc_start=doc_start, delimiter=delimiter)
    assert stream.getvalue() == expected


def test_write_sentence_refuses_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="zip"):
        conll.write_sentence(io.StringIO(), (["a", "b"], ["O"]), doc_start=False)


def test_write_conll_keeps_a_leading_feff_word_and_reads_back(tmp_path: Path) -> None:
    sentences = [Sentence(["\ufeffa", "b"], ["O", "B-X"], 0, False, 1), Sentence(["c"], ["O"], 1, True, 4)]
    path = tmp_path / "out.txt"
    conll.write_conll(path, sentences)
    assert path.read_bytes() == "\ufeff\ufeffa\tO\nb\tB-X\n\n-DOCSTART-\tO\n\nc\tO\n\n".encode()
    assert [(s.words, s.tags, s.doc_start) for s in read_conll(path)] == [(s.words, s.tags, s.doc_start) for s in sentences]
