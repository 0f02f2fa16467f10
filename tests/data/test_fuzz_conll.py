"""Fuzzing ner/data/conll.py's reader with hypothesis: generated files, valid and malformed, byte by byte.

The property: `read_conll` either returns sentences that round-trip exactly through `write_conll`
(write, read back, same words, tags and documents; writing again gives the same bytes), or raises
`DataFileError` whose message starts with ``path:line: `` (``path: `` for whole-file problems) with
a line that exists. Never another exception, never a hang (a per-example deadline, and a hard
alarm in case the reader loops).

The normal run checks the property on one hand-built file per mutation the generator makes (``MUTATIONS``:
every kind of damage, layout, line ending, byte edit and reader option, and every error kind), then on 100
generated files, derandomised so CI is reproducible: every kind is tried every run, and the generated files
try them in combination. The campaign behind the figures in RELIABILITY.md:
``FUZZ_EXAMPLES=10000 FUZZ_REPORT=fuzz.json python -m pytest tests/data/test_fuzz_conll.py``
(FUZZ_REPORT writes the outcome counts and one message per error kind as JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import string
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

# Hypothesis caches Unicode tables on disk: keep them out of the working folder.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "ner-tests-hypothesis"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ner.data.conll import read_conll, write_conll  # noqa: E402
from ner.errors import DataFileError  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))  # beside MUTATIONS, which try each kind once
HARD_LIMIT_S = 20  # a reader that takes this long on a file of at most ~1 MB is hung

# Error kinds, by the start of the reader's message (after "path:line: ").
ERROR_KINDS = [
    ("ragged columns", r"expected \d+ columns"),
    ("empty column", r"column \d+ is empty"),
    ("one column only", r"found 1 column, but a label column is needed"),
    ("unsupported tag", r"unsupported tag"),
    ("not UTF-8", r"the file is not UTF-8"),
    ("NUL byte", r"NUL byte"),
    ("bare CR", r"carriage return \(CR\)"),
    ("no sentences", r"no sentences found"),
    ("column out of range", r"\w+_column=-?\d+ is out of range"),
    ("same column", r"word_column=-?\d+ and label_column=-?\d+ are the same column"),
]

outcomes: Counter[str] = Counter()
features: Counter[str] = Counter()
first_message: dict[str, str] = {}
example_file: dict[str, bytes] = {}


# --- generated files ----------------------------------------------------------------------------

ODD = "äßé中–\xa0\u2009\u3000\x85\u2028\u200b\x1c\ufeff😀\u0301\u202e\x7f"
# Words as real files hold them: no ASCII whitespace, but any other character, odd ones included.
clean_words = st.text(
    st.one_of(
        st.sampled_from(string.ascii_letters + string.digits + string.punctuation),
        st.sampled_from(ODD),
        st.characters(codec="utf-8", exclude_characters=" \t\r\n\x0b\x0c\x00"),
    ),
    min_size=1,
    max_size=6,
)
# Anything at all, for damaged lines: whitespace, NUL, line breaks, control characters.
any_words = st.text(st.characters(codec="utf-8"), min_size=1, max_size=6)
tag_types = st.one_of(
    st.sampled_from(["PER", "LOC", "ORG", "MISC", "Disease", "X", "per_son", "A.B", "É", "中", "😀", "a-b", "B-X"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Zs", "Zl", "Zp", "Cc"]), min_size=1, max_size=4),
)
clean_tags = st.one_of(
    st.sampled_from(["O", "O", "O", "B", "I", "E", "S", "L", "U"]),
    st.builds(lambda prefix, kind: f"{prefix}-{kind}", st.sampled_from("BIESLU"), tag_types),
)
BAD_TAGS = ["B-", "PER", "o", "b-per", "X-PER", "B_PER", "B-PER\xa0", "B-PER\u2028", "OO", "-", "0", "I--", "B-\x1c"]
SEPARATORS = ["\t", " ", "  ", " \t", "\t "]
BAD_SEPARATORS = ["\t\t", "\u3000", "\xa0", "\x0b", ""]
BLANKS = ["", " ", "\t", " \t ", "\x0b", "\x0c", "\r"]
DOCSTARTS = [
    "-DOCSTART-", "-DOCSTART- -X- O O", "-DOCSTART- -X- -X- O", "-DOCSTART-\tO", "  -DOCSTART-\t-X-",
    "-DOCSTART-\t", "-docstart- O", "-DOCSTART-x O", "- DOCSTART - O", "\ufeff-DOCSTART- O",
]
NEWLINES = ["\n", "\r\n", "\r"]
INSERTIONS = [
    b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xef\xbb\xbf",
    b"\t", b" ", b"\r", b"\n", b"\n\n", b"\x00\x00", "é".encode("latin-1"),
]


@st.composite
def token_line(draw, n_columns: int, separator: str, corruption: float) -> str:
    """One token line in the file's layout, or with probability `corruption` a damaged one."""
    fields = [draw(clean_words) for _ in range(n_columns - 1)] + [draw(clean_tags)]
    if draw(st.floats(0, 1)) < corruption:
        damage = draw(st.sampled_from(["drop", "add", "empty", "separator", "word", "tag", "huge", "junk", "pad"]))
        where = draw(st.integers(0, len(fields) - 1))
        if damage == "drop" and len(fields) > 1:
            fields.pop(where)
        elif damage == "add":
            fields.insert(where, draw(clean_words))
        elif damage == "empty":
            fields[where] = ""
        elif damage == "separator":
            separator = draw(st.sampled_from(BAD_SEPARATORS))
        elif damage == "word":
            fields[where] = draw(any_words)
        elif damage == "tag":
            fields[-1] = draw(st.sampled_from(BAD_TAGS))
        elif damage == "huge":
            fields[where] = draw(st.sampled_from("wé\t ")) * draw(st.integers(1_000, 1_000_000))
        elif damage == "junk":
            return draw(st.text(st.characters(codec="utf-8"), max_size=30))
        else:
            return draw(st.sampled_from(BLANKS[1:])) + separator.join(fields) + draw(st.sampled_from(BLANKS))
    return separator.join(fields)


@st.composite
def conll_files(draw) -> bytes:
    """A CoNLL-like file: a consistent layout, a per-file rate of damaged lines, then byte-level damage."""
    n_columns = draw(st.sampled_from([2] * 8 + [3, 3, 4, 1]))
    separator = draw(st.sampled_from(SEPARATORS))
    corruption = draw(st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.02, 0.1, 0.5]))
    lines: list[str] = []
    if draw(st.booleans()):
        lines += [draw(st.sampled_from(DOCSTARTS)), ""]
    for _ in range(draw(st.integers(1, 8))):
        choice = draw(st.sampled_from(["sentence"] * 6 + ["docstart", "blanks", "empty sentence"]))
        if choice == "sentence":
            lines += [draw(token_line(n_columns, separator, corruption)) for _ in range(draw(st.integers(1, 6)))]
            lines.append(draw(st.sampled_from(BLANKS)))
        elif choice == "docstart":
            lines.append(draw(st.sampled_from(DOCSTARTS)))
            if draw(st.booleans()):
                lines.append("")
        else:
            lines += [draw(st.sampled_from(BLANKS)) for _ in range(draw(st.integers(1, 3)))]
    if lines and draw(st.booleans()):
        lines.pop()  # no blank line at the end
    newline = draw(st.sampled_from(NEWLINES + ["mixed"]))
    if newline == "mixed":
        text = "".join(line + draw(st.sampled_from(NEWLINES)) for line in lines)
    else:
        text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    data = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    for _ in range(draw(st.sampled_from([0] * 8 + [1, 2, 3]))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "insert", "delete", "truncate"]))
        if action == "insert":
            data = data[:position] + draw(st.sampled_from(INSERTIONS)) + data[position:]
        elif action == "delete":
            data = data[:position] + data[position + 1 :]
        else:
            data = data[:position]
    return data


any_file = st.one_of(*[conll_files()] * 9, st.binary(max_size=200))  # 1 in 10: raw bytes
options = st.fixed_dictionaries(
    {
        "word_column": st.sampled_from([0] * 12 + [1, -2]),
        "label_column": st.sampled_from([-1] * 12 + [1, 2, -3]),
        "delimiter": st.sampled_from([None] * 6 + ["\t", " "]),
    }
)
file_names = st.sampled_from(["data.txt", "train.conll", "my data.txt", "x:1.txt", "ü.txt", "[1].txt"])


# --- the property -------------------------------------------------------------------------------


@contextlib.contextmanager
def hard_limit(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the body runs longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"read_conll did not finish within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def tally_features(data: bytes) -> None:
    """Count what the generated files hold, for the figures in RELIABILITY.md."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        features["invalid UTF-8"] += 1
    found = {
        "CRLF": b"\r\n" in data,
        "bare CR": re.search(rb"\r(?!\n)", data) is not None,
        "BOM at the start": data.startswith(b"\xef\xbb\xbf"),
        "BOM elsewhere": b"\xef\xbb\xbf" in data[3:],
        "NUL byte": b"\x00" in data,
        "line of 1,000+ bytes": max(map(len, data.split(b"\n"))) >= 1000,
        "-DOCSTART- (any variant)": b"docstart" in data.lower(),
        "tab": b"\t" in data,
        "empty file": not data,
    }
    features.update(name for name, present in found.items() if present)


def error_kind(detail: str) -> str:
    for kind, pattern in ERROR_KINDS:
        if re.match(pattern, detail):
            return kind
    return "other: " + detail[:60]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz")
    report = os.environ.get("FUZZ_REPORT")
    if report:
        Path(report).write_text(
            json.dumps(
                {
                    "examples": EXAMPLES,
                    "hand_built_files": len(MUTATIONS),  # counted in the outcomes too
                    "outcomes": dict(outcomes.most_common()),
                    "features": dict(features.most_common()),
                    "messages": first_message,
                    "files": {kind: data[:300].decode("utf-8", "backslashreplace") for kind, data in example_file.items()},
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )


def check_file(folder: Path, data: bytes, options: dict, name: str = "data.txt") -> str:
    """Assert the property on one file; return its outcome: ``valid`` or ``error: <kind>``."""
    path = folder / name
    path.write_bytes(data)
    tally_features(data)
    try:
        with hard_limit(HARD_LIMIT_S):
            sentences = list(read_conll(path, **options))
    except DataFileError as error:
        n_lines = data.count(b"\n") + 1
        assert error.path == str(path)
        if error.line is None:
            assert str(error).startswith(f"{path}: ")
        else:
            assert str(error).startswith(f"{path}:{error.line}: ") and 1 <= error.line <= n_lines, (str(error), n_lines)
        kind = error_kind(error.detail)
        outcomes["error: " + kind] += 1
        first_message.setdefault(kind, str(error).replace(str(folder), "…"))
        example_file.setdefault(kind, data)
        return "error: " + kind

    assert sentences, "read_conll returned no sentences without raising"
    outcomes["valid"] += 1
    if any("\ufeff" in word for sentence in sentences for word in sentence.words):
        outcomes["valid, a word holds U+FEFF"] += 1  # data: it must round-trip like any other word
    delimiter = options.get("delimiter") or "\t"
    copy = folder / "copy.txt"
    write_conll(copy, sentences, delimiter=delimiter)
    with hard_limit(HARD_LIMIT_S):
        again = list(read_conll(copy, delimiter=options.get("delimiter")))
    assert [(s.words, s.tags, s.doc_start, s.document_id) for s in again] == [
        (s.words, s.tags, s.doc_start, s.document_id) for s in sentences
    ]
    written = copy.read_bytes()
    write_conll(copy, again, delimiter=delimiter)
    assert copy.read_bytes() == written
    return "valid"


# One file per mutation the generator makes, and the outcome it has (each error kind at least once).
MUTATIONS = [
    # damaged token lines (token_line)
    ("column dropped", b"EU\tB-ORG\nrejects\n", {}, "error: ragged columns"),
    ("column added", b"EU\tB-ORG\nrejects\tgerman\tO\n", {}, "error: ragged columns"),
    ("empty column", b"EU\tB-ORG\n\tO\n", {}, "error: empty column"),
    ("separator: double tab", b"EU\tB-ORG\nrejects\t\tO\n", {}, "error: ragged columns"),
    ("separator: U+3000", "EU\tB-ORG\nrejects\u3000O\n".encode(), {}, "error: ragged columns"),
    ("separator: no-break space", "EU B-ORG\nrejects\xa0O\n".encode(), {}, "error: ragged columns"),
    ("separator: vertical tab", b"EU\tB-ORG\nrejects\x0bO\n", {}, "error: ragged columns"),
    ("separator: none", b"EU\tB-ORG\nrejectsO\n", {}, "error: ragged columns"),
    ("word: control character", b"E\x1cU\tB-ORG\n", {}, "valid"),
    ("word: NUL", b"E\x00U\tB-ORG\n", {}, "error: NUL byte"),
    ("word: U+2028", "E\u2028U\tB-ORG\n".encode(), {}, "valid"),
    ("word: U+0085", "E\x85U\tB-ORG\n".encode(), {}, "valid"),
    ("tag: no type", b"EU\tB-\n", {}, "error: unsupported tag"),
    ("tag: lower case", b"EU\tb-per\n", {}, "error: unsupported tag"),
    ("tag: no-break space", "EU\tB-PER\xa0\n".encode(), {}, "error: unsupported tag"),
    ("huge line", ("wé" * 500_000 + "\tO\n").encode(), {}, "valid"),
    ("junk line", b"EU\tB-ORG\n!!\n", {}, "error: ragged columns"),
    ("padding", b"  EU\tB-ORG \x0c\nrejects\tO\n", {}, "valid"),
    # layouts, odd characters, blank lines and -DOCSTART- (conll_files)
    ("one column", b"EU\nrejects\n", {}, "error: one column only"),
    ("four columns, spaces", b"EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n", {}, "valid"),
    ("mixed separators", b"EU \tB-ORG\nrejects\t O\n", {}, "valid"),
    ("odd characters", "\u200bEU\u0301 😀\tB-\u4e2d\nr\u202ee\tO\n".encode(), {}, "valid"),
    ("blank lines of whitespace", b"EU\tB-ORG\n \t \n\x0b\nPeter\tB-PER\n\x0c\n", {}, "valid"),
    ("blank line of CR", b"EU\tB-ORG\n\r\nPeter\tB-PER\n", {}, "valid"),
    ("empty sentences", b"\n\n\nEU\tB-ORG\n\n\n\n", {}, "valid"),
    ("-DOCSTART- variants", "-DOCSTART- -X- O O\n\nEU B-ORG\n\n  -DOCSTART-\t-X-\n\nx O\n\n\ufeff-DOCSTART- O\n\ny O\n\n"
     "-DOCSTART-\n".encode(), {}, "valid"),
    ("-DOCSTART- look-alikes are words", b"-docstart- O\n-DOCSTART-x O\nEU B-ORG\n", {}, "valid"),
    ("-DOCSTART- alone", b"-DOCSTART-\n\n", {}, "error: no sentences"),
    ("no final newline", b"EU\tB-ORG\nrejects\tO", {}, "valid"),
    ("CRLF", b"EU\tB-ORG\r\nrejects\tO\r\n\r\n", {}, "valid"),
    ("bare CR", b"EU\tB-ORG\rrejects\tO\r", {}, "error: bare CR"),
    ("mixed line endings", b"EU\tB-ORG\r\nrejects\tO\n\r\nx\tO\r", {}, "valid"),
    ("BOM at the start", b"\xef\xbb\xbfEU\tB-ORG\n", {}, "valid"),
    # byte-level edits
    ("BOM inside a word", b"EU\tB-ORG\nre\xef\xbb\xbfjects\tO\n", {}, "valid"),
    ("NUL inserted", b"EU\tB-ORG\nrej\x00ects\tO\n", {}, "error: NUL byte"),
    ("\\xff inserted", b"EU\tB-ORG\nrej\xffects\tO\n", {}, "error: not UTF-8"),
    ("lone lead byte", b"EU\tB-ORG\nrej\xc3\n", {}, "error: not UTF-8"),
    ("encoded surrogate", b"EU\tB-ORG\nrej\xed\xa0\x80ects\tO\n", {}, "error: not UTF-8"),
    ("overlong encoding", b"EU\tB-ORG\n\xc0\xafrejects\tO\n", {}, "error: not UTF-8"),
    ("above U+10FFFF", b"EU\tB-ORG\nrejects\xf4\x90\x80\x80\tO\n", {}, "error: not UTF-8"),
    ("latin-1", "EU\tB-ORG\ncafé\tO\n".encode("latin-1"), {}, "error: not UTF-8"),
    ("byte deleted", b"EU\tB-ORG\nrejectsO\n", {}, "error: ragged columns"),
    ("cut short", b"EU\tB-ORG\nrejects\t", {}, "error: empty column"),
    ("raw bytes", bytes(range(256)), {}, "error: NUL byte"),
    ("empty file", b"", {}, "error: no sentences"),
    # reader options
    ("label_column out of range", b"EU\tB-ORG\n", {"label_column": -3}, "error: column out of range"),
    ("word and label the same column", b"EU\tB-ORG\n", {"word_column": 1, "label_column": -1}, "error: same column"),
    ("word_column 1 of 3", b"NNP EU B-ORG\n", {"word_column": 1}, "valid"),
    ("delimiter tab: words with spaces", b"New York\tB-LOC\n", {"delimiter": "\t"}, "valid"),
    ("delimiter space on a tab file", b"EU B-ORG\nNew York\tB-LOC\n", {"delimiter": " "}, "error: unsupported tag"),
]


@pytest.mark.parametrize(("data", "options", "outcome"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_mutation_kind_round_trips_or_names_path_and_line(folder: Path, data: bytes, options: dict, outcome: str) -> None:
    assert check_file(folder, data, options) == outcome


def test_the_mutations_reach_every_error_kind() -> None:
    assert {m[3] for m in MUTATIONS} == {"valid"} | {f"error: {kind}" for kind, _ in ERROR_KINDS}


@settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # per file; files reach ~1 MB, reading one takes milliseconds
    derandomize=True,
    database=None,  # nothing written into the working folder
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=any_file, options=options, name=file_names)
def test_reader_round_trips_or_names_path_and_line(folder: Path, data: bytes, options: dict, name: str) -> None:
    check_file(folder, data, options, name)


# --- the writer's own contract ------------------------------------------------------------------


def test_write_conll_layout(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"-DOCSTART- -X- O O\n\nNew York\tB-LOC\nsaid\tO\r\n\nx\tO\n-DOCSTART-\n\ny\tS-PER")
    write_conll(tmp_path / "out.txt", read_conll(path))
    assert (tmp_path / "out.txt").read_text() == (
        "-DOCSTART-\tO\n\nNew York\tB-LOC\nsaid\tO\n\nx\tO\n\n-DOCSTART-\tO\n\ny\tS-PER\n\n"
    )


@pytest.mark.parametrize(
    "words, tags, delimiter, message",
    [
        ([], [], "\t", r"sentence 1 \(line 1\) has 0 words and 0 tags"),
        (["a"], ["O", "O"], "\t", r"has 1 words and 2 tags"),
        (["New York"], ["B-LOC"], " ", r"word 1: 'New York' tagged 'B-LOC' cannot be written with delimiter ' '"),
        (["a\tb"], ["O"], "\t", r"'a\\tb' tagged 'O' cannot be written"),
        (["a\nb"], ["O"], "\t", r"cannot be written"),
        ([" a"], ["O"], "\t", r"cannot be written"),
        ([""], ["O"], "\t", r"cannot be written"),
        (["a"], ["PER"], "\t", r"'a' tagged 'PER' cannot be written"),
        (["-DOCSTART-"], ["O"], "\t", r"cannot be written"),
        (["\ufeff-DOCSTART-"], ["O"], "\t", r"cannot be written"),  # reads as a concatenated file's -DOCSTART-
        (["a\rb"], ["O"], "\t", r"cannot be written"),
        (["a"], None, "\t", r"sentence 1 \(line 1\) has no tags"),
        (["a"], ["O"], "", r"delimiter must be a non-empty string"),
    ],
)
def test_write_conll_refuses_what_would_not_read_back(tmp_path: Path, words, tags, delimiter, message) -> None:
    from ner.data.conll import Sentence

    path = tmp_path / "out.txt"
    with pytest.raises(ValueError, match=message):
        write_conll(path, [Sentence(words, tags, 0, False, 1)], delimiter=delimiter)
    assert not path.exists() and list(tmp_path.iterdir()) == []  # atomic: no partial file, no temporary left


def test_bare_carriage_return_line_endings_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mac.txt"
    path.write_bytes(b"a O\rb B-PER\rc O\r")
    with pytest.raises(DataFileError, match=re.escape(f"{path}:1: ")):
        list(read_conll(path))


def test_second_byte_order_mark_at_the_start_keeps_the_document(tmp_path: Path) -> None:
    path = tmp_path / "twice.txt"
    path.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf-DOCSTART- O\n\na\tO\n")
    assert [(s.words, s.doc_start) for s in read_conll(path)] == [(["a"], True)]  # no `\ufeff-DOCSTART-` word


@pytest.mark.parametrize(
    "words",
    [["Dubbz\ufeff"], ["\ufeffa", "b"], ["a", "\ufeffb"], ["\ufeff\ufeffa"], ["\ufeff"], ["x\u200b\u2060y\ufeff"]],
)
@pytest.mark.parametrize("delimiter", ["\t", " "])
@pytest.mark.parametrize("doc_start", [False, True])
def test_words_holding_feff_round_trip(tmp_path: Path, words: list[str], delimiter: str, doc_start: bool) -> None:
    """`write_conll` writes such words, and `read_conll` reads its own output back unchanged."""
    from ner.data.conll import Sentence

    path = tmp_path / "out.txt"
    sentences = [Sentence(words, ["B-person"] * len(words), 0, doc_start, 1), Sentence(words, ["O"] * len(words), 0, False, 9)]
    write_conll(path, sentences, delimiter=delimiter)
    again = list(read_conll(path, delimiter=delimiter))
    assert [(s.words, s.tags, s.doc_start) for s in again] == [(s.words, s.tags, s.doc_start) for s in sentences]
