"""Reading CoNLL-style NER files (one token per line, blank line between sentences) into `datasets`, and writing them.

`read_conll` parses one file into `Sentence`s and rejects anything it cannot read faithfully with
a `DataFileError` naming ``path:line``. `load_conll` runs `ConllBuilder`, which writes one Arrow
split per data file and reuses it while the file's content and the parser code are unchanged.

`write_sentence` is the one CoNLL layout every writer uses: `write_conll` (files `read_conll` reads
back unchanged), `write_predictions` (``word<TAB>gold<TAB>predicted``, the predictions file conlleval
reads) and the CoNLL output of ``python -m ner predict``.

Invisible characters (U+FEFF, U+200B and the other Unicode format characters) inside a word are
data: the word keeps them, and the reader logs how many words hold one. Only a byte order mark
opening the file is a file matter, and is dropped.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import datasets
from datasets.builder import Key
from datasets.exceptions import DatasetGenerationError
import pyarrow.compute as pc

from ner.data.schemes import OUTSIDE, is_tag
from ner.errors import DataFileError
from ner.files import atomic_writer

logger = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"

FEATURES = datasets.Features(
    {
        "words": datasets.List(datasets.Value("string")),
        "tags": datasets.List(datasets.Value("string")),
        "document_id": datasets.Value("int32"),
        "doc_start": datasets.Value("bool"),
        "line": datasets.Value("int32"),
    }
)

_BOM = b"\xef\xbb\xbf"
_FEFF = "\ufeff"
# ASCII whitespace only: a non-breaking space inside a token must not split it.
_SPACE = " \t\r\f\v"
_SPACE_RUN = re.compile(r"[ \t\r\f\v]+")
_TAG_HELP = (
    "accepted tags are `O`, or `B`, `I`, `E`, `S`, `L` or `U` alone or followed by `-TYPE` "
    "(e.g. B-PER, I-Disease, S-LOC, U-ORG, untyped B/I); IO-only tags such as `PER` are not "
    "supported, convert the file to BIO first"
)


@dataclass
class Sentence:
    """One sentence of a CoNLL file, with where it came from."""

    words: list[str]
    tags: list[str] | None  # None when the file has no tag column (see `read_conll`)
    document_id: int  # 0-based index of the document in the file
    doc_start: bool  # True for the first sentence after a -DOCSTART- line
    line: int  # 1-based line number (in the file) of the sentence's first word


def _show(line: str) -> str:
    shown = repr(line)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _first_field(line: str) -> str:
    return _SPACE_RUN.split(line.strip(_SPACE), 1)[0]


def _is_docstart(line: str) -> bool:
    # A U+FEFF before -DOCSTART- is the byte order mark of a file concatenated onto another one.
    return _first_field(line).lstrip(_FEFF) == DOCSTART


def _is_blank(line: str) -> bool:
    # A line of nothing but U+FEFF holds no word: a byte order mark before an empty line.
    return not line.strip(_SPACE + _FEFF)


def _invisible(word: str) -> bool:
    """True if the word holds a Unicode format character (category Cf: U+FEFF, U+200B, U+200D, ...)."""
    # isprintable() is False for every Cf character, and fast: the per-character look-up runs only then.
    return not word.isprintable() and any(unicodedata.category(c) == "Cf" for c in word)


def _decoded_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without line ending), refusing NUL bytes, non-UTF-8 bytes and bare CRs.

    A byte order mark opening the file is dropped; any other U+FEFF is left in the text.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            skipped = 0
            if lineno == 1 and raw.startswith(_BOM):
                raw, skipped = raw[len(_BOM) :], len(_BOM)
            nul = raw.find(b"\x00")
            if nul >= 0:
                raise DataFileError(
                    path,
                    lineno,
                    f"NUL byte at byte offset {nul + skipped} of the line: this looks like a binary "
                    "(or UTF-16) file, expected UTF-8 text with one token per line",
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFileError(
                    path,
                    lineno,
                    f"the file is not UTF-8: byte 0x{raw[e.start]:02x} at byte offset "
                    f"{e.start + skipped} of the line cannot be decoded; re-encode the file as UTF-8, "
                    f"e.g. `iconv -f latin1 -t utf-8 {path} > fixed.txt`",
                ) from None
            text = text.rstrip("\n").removesuffix("\r")
            if "\r" in text:
                raise DataFileError(
                    path,
                    lineno,
                    f"carriage return (CR) at character {text.index(chr(13)) + 1} inside the line: lines must end "
                    "with LF or CRLF (old Mac files end with CR alone; convert with `tr '\\r' '\\n'`)",
                )
            yield lineno, text


class _TokenLines:
    """Cuts token lines into (word, tag), holding every line to the layout of the first one.

    `label_column=None`: no tag column, the tag is None. `tags_optional`: the first token line
    decides for the whole file (one column, or no tag in the label column: no tags), and a later
    line that disagrees is refused.
    """

    def __init__(
        self, path: str, word_column: int, label_column: int | None, delimiter: str | None, tags_optional: bool
    ) -> None:
        self.path, self.word_column, self.label_column = path, word_column, label_column
        self.delimiter, self.tags_optional = delimiter, tags_optional
        self.n_columns = self.first_line = self.word_index = 0
        self.label_index: int | None = None  # the tag column, None when the file has none
        self.untagged_index: int | None = None  # tags_optional: the label column that held no tag on the first line
        self.first_value = ""  # tags_optional: what the first token line held in the label column
        self.valid_tags: set[str] = set()

    @property
    def tagged(self) -> bool:
        return self.label_index is not None

    def split(self, line: str) -> list[str]:
        if self.delimiter is None:
            return _SPACE_RUN.split(line.strip(_SPACE))
        strip = "".join(c for c in _SPACE if c not in self.delimiter)
        return [field.strip(strip) for field in line.split(self.delimiter)]

    def _start(self, lineno: int, line: str) -> None:
        """Fix the delimiter, the column count and the word/tag columns from the first token line."""
        if self.delimiter is None and "\t" in line:
            self.delimiter = "\t"
        fields = self.split(line)
        self.n_columns, self.first_line = len(fields), lineno
        if self.n_columns < 2 and self.label_column is not None and not self.tags_optional:
            raise DataFileError(
                self.path, lineno, "found 1 column, but a label column is needed: each token line "
                f"must hold at least `word tag` (separated by a tab or spaces): {_show(line)}",
            )
        self.word_index = self._column(lineno, "word_column", self.word_column)
        if self.label_column is None or self.n_columns < 2:
            return
        label_index = self._column(lineno, "label_column", self.label_column)
        if self.word_index == label_index:
            raise DataFileError(
                self.path, lineno, f"word_column={self.word_column} and label_column={self.label_column} "
                f"are the same column ({self.word_index}); pick two different columns",
            )
        self.first_value = fields[label_index]
        if self.tags_optional and not is_tag(self.first_value):
            self.untagged_index = label_index
        else:
            self.label_index = label_index

    def _column(self, lineno: int, name: str, index: int) -> int:
        n = self.n_columns
        if not -n <= index < n:
            raise DataFileError(
                self.path, lineno, f"{name}={index} is out of range: the first token line has {n} "
                f"columns (use 0..{n - 1}, or -{n}..-1 to count from the end)",
            )
        return index % n

    def parse(self, lineno: int, line: str) -> tuple[str, str | None]:
        if not self.n_columns:
            self._start(lineno, line)
        fields = self.split(line)
        if len(fields) != self.n_columns:
            # With optional tags, one column on the first token line made the file untagged.
            untagged = ", so the file is read as words without gold tags" if self.tags_optional and self.n_columns == 1 else ""
            raise DataFileError(
                self.path, lineno, f"expected {self.n_columns} column{'s' if self.n_columns > 1 else ''} (as on "
                f"line {self.first_line}, the first token line{untagged}), found {len(fields)}: {_show(line)}",
            )
        if "" in fields:
            raise DataFileError(
                self.path, lineno, f"column {fields.index('')} is empty: {_show(line)}; every column "
                "of a token line needs a value",
            )
        word = fields[self.word_index]
        if self.label_index is None:
            if self.untagged_index is not None and is_tag(fields[self.untagged_index]):
                raise DataFileError(
                    self.path, lineno, f"column {self.untagged_index} holds the tag {fields[self.untagged_index]!r}, "
                    f"but on line {self.first_line} (the first token line) it holds {self.first_value!r}, which is "
                    "not a tag, so the file is read as words without gold tags; give every token line a tag or none",
                )
            return word, None
        tag = fields[self.label_index]
        if tag not in self.valid_tags:
            if not is_tag(tag):
                if self.tags_optional:
                    raise DataFileError(
                        self.path, lineno, f"{tag!r} in column {self.label_index} is not a tag, but line "
                        f"{self.first_line} (the first token line) has the tag {self.first_value!r} there, so the "
                        "file is read with gold tags; give every token line a tag (`O` outside entities) or none",
                    )
                raise DataFileError(
                    self.path, lineno, f"unsupported tag {tag!r} in column {self.label_index} "
                    f"(label_column={self.label_column}): {_TAG_HELP}",
                )
            self.valid_tags.add(tag)
        return word, tag


def read_conll(
    path: str | os.PathLike,
    *,
    word_column: int = 0,
    label_column: int | None = -1,
    delimiter: str | None = None,
    tags_optional: bool = False,
) -> Iterator[Sentence]:
    """Yield the sentences of a CoNLL-style file, in file order.

    `delimiter=None` picks per file: tab-separated if the first token line has a tab, else runs
    of whitespace. `-DOCSTART-` lines separate documents and are not tokens. Bad input raises
    `DataFileError` as the offending line is reached.

    Tags: by default every token line needs one in `label_column`. `label_column=None` reads a file
    without tags (every `Sentence.tags` is None). `tags_optional=True` (input to prediction) lets the
    first token line decide for the whole file: one column, or a label column that holds no tag
    (`word POS`), means no tags; a later line that disagrees is refused rather than read half-tagged.

    U+FEFF: a byte order mark opening the file is dropped. Anywhere else a U+FEFF is an ordinary
    character of the word that holds it (WNUT-17 has `Dubbz\\ufeff`), as are U+200B and the other
    format characters; the reader logs, once per file, how many words hold one and where the first
    is. A U+FEFF can hold no word in two places, where it can only be the byte order mark of a file
    concatenated onto another one: before `-DOCSTART-` (the line still separates documents) and on an
    otherwise blank line (still a sentence break). Those are ignored, and counted in the same log line.
    """
    if delimiter == "":
        raise ValueError("delimiter must be None (auto: tab or whitespace) or a non-empty string")
    token_lines = _TokenLines(os.fspath(path), word_column, label_column, delimiter, tags_optional)
    return _sentences(os.fspath(path), token_lines)


def _sentences(path: str, token_lines: _TokenLines) -> Iterator[Sentence]:
    words: list[str] = []
    tags: list[str] = []
    start = document_id = n_sentences = 0
    after_docstart = False
    invisible = stray_boms = 0
    first_invisible = first_bom = 0

    def finish() -> Sentence:
        nonlocal words, tags, document_id, n_sentences, after_docstart
        # Consecutive -DOCSTART- lines, or one before the first sentence, open no empty document.
        if after_docstart and n_sentences:
            document_id += 1
        sentence = Sentence(words, tags if token_lines.tagged else None, document_id, after_docstart, start)
        words, tags, after_docstart = [], [], False
        n_sentences += 1
        return sentence

    for lineno, line in _decoded_lines(path):
        if _is_blank(line) or _is_docstart(line):
            if _FEFF in line:
                stray_boms += 1
                first_bom = first_bom or lineno
            if words:
                yield finish()
            if not _is_blank(line):
                after_docstart = True
        else:
            word, tag = token_lines.parse(lineno, line)
            if not words:
                start = lineno
            words.append(word)
            if tag is not None:
                tags.append(tag)
            if _invisible(word):
                invisible += 1
                first_invisible = first_invisible or lineno
    if words:
        yield finish()
    if not n_sentences:
        if token_lines.label_column is None:
            expected = "`word`"
        else:
            expected = "`word<TAB>tag` or `word`" if token_lines.tags_optional else "`word<TAB>tag`"
        raise DataFileError(
            path, None, "no sentences found: the file is empty or holds only blank and -DOCSTART- "
            f"lines; expected token lines such as {expected}, with a blank line after each sentence",
        )
    if invisible or stray_boms:
        found = []
        if invisible:
            found.append(
                f"{invisible} words hold invisible characters (Unicode format characters such as U+FEFF or "
                f"U+200B; kept as part of the word), the first on line {first_invisible}"
            )
        if stray_boms:
            found.append(
                f"{stray_boms} byte order marks (U+FEFF) before -DOCSTART- or on a blank line were ignored "
                f"(concatenated files?), the first on line {first_bom}"
            )
        logger.warning("%s: %s", path, "; ".join(found))


def _source_hash() -> str:
    # Part of the cache path, so that a change to the parser never serves stale Arrow files.
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass
class ConllConfig(datasets.BuilderConfig):
    """Builder settings: which columns hold the word and the tag, and the column delimiter."""

    word_column: int = 0
    label_column: int = -1
    delimiter: str | None = None

    def create_config_id(self, config_kwargs: dict, custom_features: datasets.Features | None = None) -> str:
        """Add the content hash of every data file to the cache id.

        datasets identifies local data files by path and mtime only; the content hash also
        catches an edit that keeps the mtime (coarse file-system clocks, `cp -p`, `touch -r`).
        """
        config_id = super().create_config_id(config_kwargs, custom_features)
        if not self.data_files:
            return config_id
        digest = hashlib.sha256()
        for split in sorted(self.data_files):
            for path in self.data_files[split]:
                with open(path, "rb") as f:
                    digest.update(f"{split}\0{path}\0".encode() + hashlib.file_digest(f, "sha256").digest())
        return f"{config_id}-{digest.hexdigest()[:16]}"


class ConllBuilder(datasets.GeneratorBasedBuilder):
    """One split per `data_files` key, each read from exactly one local CoNLL file."""

    BUILDER_CONFIG_CLASS = ConllConfig

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("hash", _source_hash())
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description="Sentences of CoNLL-style NER files.", features=FEATURES)

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        if not self.config.data_files:
            raise ValueError("ConllBuilder needs data_files, e.g. {'train': 'train.txt'}")
        generators = []
        for split, files in self.config.data_files.items():
            if len(files) != 1:
                raise ValueError(
                    f"split {split!r} must name exactly one file, got {len(files)}: {list(files)}; "
                    "concatenate the files first, or give each its own split"
                )
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"path": files[0]}))
        return generators

    def _generate_examples(self, path: str) -> Iterator[tuple[Key, dict]]:
        sentences = read_conll(
            path,
            word_column=self.config.word_column,
            label_column=self.config.label_column,
            delimiter=self.config.delimiter,
        )
        for index, sentence in enumerate(sentences):
            yield Key(0, index), {
                "words": sentence.words,
                "tags": sentence.tags,
                "document_id": sentence.document_id,
                "doc_start": sentence.doc_start,
                "line": sentence.line,
            }


def load_splits(builder_class: type[datasets.GeneratorBasedBuilder], data_files: dict[str, str], *, cache_dir: str | None = None, **config) -> datasets.DatasetDict:
    """Run ``builder_class`` (``ConllBuilder`` or a subclass) over one file per split, keeping its Arrow cache.

    ``config`` are the builder's options. A reader's `DataFileError` comes out as itself (``path:line``),
    not inside datasets' generic wrapper.
    """
    if not data_files:
        raise ValueError("data_files is empty: give one file per split, e.g. {'train': 'train.txt'}")
    patterns = {}
    for split, path in data_files.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{split} file not found: {path}")
        # datasets treats data_files as glob patterns; a `[` in a file name must stay literal.
        patterns[split] = glob.escape(os.path.abspath(path))
    builder = builder_class(cache_dir=cache_dir, data_files=patterns, **config)
    try:
        builder.download_and_prepare()
    except DatasetGenerationError as e:
        if isinstance(e.__cause__, DataFileError):
            raise e.__cause__ from None
        raise
    splits = builder.as_dataset()
    for split, dataset in splits.items():
        table = dataset.data.table
        tokens = pc.sum(pc.list_value_length(table.column("words"))).as_py() or 0
        documents = len(pc.unique(table.column("document_id")))
        logger.info(
            "%s: %s: %d sentences, %d tokens, %d documents",
            split, data_files[split], dataset.num_rows, tokens, documents,
        )
    return splits


def load_conll(
    data_files: dict[str, str],
    *,
    cache_dir: str | None = None,
    word_column: int = 0,
    label_column: int = -1,
    delimiter: str | None = None,
) -> datasets.DatasetDict:
    """Read one CoNLL file per split (e.g. {"train": ..., "validation": ..., "test": ...}).

    The Arrow cache under `cache_dir` is reused while the files and the options are unchanged.
    """
    return load_splits(
        ConllBuilder, data_files, cache_dir=cache_dir, word_column=word_column, label_column=label_column, delimiter=delimiter
    )


def write_sentence(stream: TextIO, columns: Sequence[Sequence[str]], *, doc_start: bool, delimiter: str = "\t") -> None:
    """One sentence in CoNLL layout: a line per word with its fields side by side (``columns``: the words,
    then one or more tag columns), then a blank line; first a ``-DOCSTART-`` line (``O`` in each tag
    column) and a blank line where the sentence opens a document. Writes what it is given, unchecked."""
    if doc_start:
        stream.write(delimiter.join([DOCSTART] + [OUTSIDE] * (len(columns) - 1)) + "\n\n")
    for fields in zip(*columns, strict=True):
        stream.write(delimiter.join(fields) + "\n")
    stream.write("\n")


def write_conll(path: str | os.PathLike, sentences: Iterable[Sentence], *, delimiter: str = "\t") -> None:
    """Write sentences as a CoNLL file that `read_conll(path, delimiter=...)` reads back unchanged.

    One `word<delimiter>tag` line per word, a blank line after each sentence, and a
    `-DOCSTART-<delimiter>O` line (then a blank line) before each sentence with `doc_start`. If the
    file's first line starts with U+FEFF (a word that starts with one), a byte order mark is written
    before it, since the reader drops the file's first U+FEFF. Written atomically, so an interrupted
    write leaves no truncated file. A sentence that would not read back as itself (no words or no
    tags, a word holding the delimiter or a line break, padded with whitespace, a tag the reader
    refuses, a line that reads as -DOCSTART-) raises `ValueError` naming the sentence and word, and
    nothing is written.
    """
    if not delimiter or "\n" in delimiter:
        raise ValueError(f"delimiter must be a non-empty string without a line break, got {delimiter!r}")
    with atomic_writer(path) as stream:
        for number, sentence in enumerate(sentences, start=1):
            _check_writable(sentence, number, delimiter)
            if number == 1 and not sentence.doc_start and sentence.words[0].startswith(_FEFF):
                stream.write(_FEFF)  # the byte order mark the reader drops, so that the word keeps its own
            write_sentence(stream, (sentence.words, sentence.tags), doc_start=sentence.doc_start, delimiter=delimiter)


def _check_writable(sentence: Sentence, number: int, delimiter: str) -> None:
    """Raise `ValueError` naming the sentence (and word) if `write_conll` could not write it to read back as itself."""
    where = f"sentence {number} (line {sentence.line})"
    if sentence.tags is None:
        raise ValueError(f"{where} has no tags: write_conll writes `word<delimiter>tag` lines")
    if not sentence.words or len(sentence.words) != len(sentence.tags):
        raise ValueError(
            f"{where} has {len(sentence.words)} words and {len(sentence.tags)} tags: "
            "a sentence needs at least one word, and one tag per word"
        )
    for position, (word, tag) in enumerate(zip(sentence.words, sentence.tags), start=1):
        if (
            not word
            or word != word.strip(_SPACE)
            or delimiter in word
            or "\n" in word
            or "\r" in word
            or delimiter in tag
            or not is_tag(tag)
            or _is_docstart(f"{word}{delimiter}{tag}")
        ):
            raise ValueError(
                f"{where}, word {position}: {word!r} tagged {tag!r} cannot be written with "
                f"delimiter {delimiter!r} and read back as it is"
            )


def write_predictions(
    path: str | os.PathLike,
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    doc_start: Sequence[bool],
) -> None:
    """A scored split's predictions file: ``word<TAB>gold<TAB>predicted`` per word (as conlleval reads it),
    a blank line after each sentence, ``-DOCSTART-`` kept; written atomically."""
    with atomic_writer(path) as stream:
        for sentence_words, sentence_gold, sentence_predicted, starts in zip(words, gold, predicted, doc_start):
            write_sentence(stream, (sentence_words, sentence_gold, sentence_predicted), doc_start=starts)
