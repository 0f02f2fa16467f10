"""``python -m ner predict``: tag CoNLL, JSON-lines or raw-text files with a trained folder, streaming.

    python -m ner predict --model out --input news.txt --output news.jsonl         # raw text, a line per input
    python -m ner predict --model out --input test.conll --output test.pred.conll   # words (and gold) in CoNLL

The input format comes from ``--input_format``, else from the extension (.conll/.tsv/..., .jsonl/.json),
else from the first non-blank lines: CoNLL token lines or ``-DOCSTART-``, JSON objects, or prose; when
those do not tell, the command stops and asks for ``--input_format``.

Documents, for a model trained with document context (``context_size`` > 0): CoNLL ``-DOCSTART-``
lines; in JSON lines, consecutive records with the same ``"document_id"`` (a record without one is a
document of its own); in raw text, the lines of a paragraph (a blank line ends a document; with
``--text_per_file`` the file is one input, windowed with overlap). Input is read and written in chunks
(``--chunk_size`` inputs; with context, cut only where a document ends), so memory stays bounded
whatever the file size; within a chunk examples are batched by length.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ner.alignment import check_window_options
from ner.errors import DataFileError
from ner.limits import check_numbers
from ner.schemes import as_scored
from ner.staging import check_model_path

logger = logging.getLogger(__name__)

FORMATS = ("conll", "jsonl", "text")
OUTPUT_FORMATS = ("conll", "jsonl", "spans")  # spans: JSON lines annotation tools load (ner/spans.py)
EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl",
    ".conll": "conll", ".conll03": "conll", ".conllu": "conll", ".iob": "conll", ".bio": "conll", ".tsv": "conll",
}
DOCUMENT_FIELD = "document_id"  # JSON lines: consecutive records with the same value form one document
SNIFF_LINES = 20  # non-blank lines looked at to tell the format of a file whose extension does not
SNIFF_LINE_BYTES = 1 << 20  # a longer line is looked at by its start only
_BOM = b"\xef\xbb\xbf"


@dataclass
class Record:
    """One input to tag (a CoNLL sentence, a text line or file, a JSON object) and what its output needs."""

    id: Any
    words: list[str]
    text: str | None = None  # raw text the words were split from; entity offsets index it
    offsets: list[tuple[int, int]] | None = None  # each word's (start, end) in ``text``
    gold: list[str] | None = None  # CoNLL input with a tag column
    document: int | None = None  # records with the same number in a row are one document; None: no document
    doc_start: bool = False  # the first record of a document (a chunk may end before it)
    document_id: Any = None  # the JSON record's own document_id, echoed in the output
    fields: dict[str, Any] | None = None  # the JSON record itself, kept in --output_format spans


# --- the input format ---------------------------------------------------------------------------


def _sniff_lines(path: str) -> list[tuple[str, bool]]:
    """Up to SNIFF_LINES non-blank lines from the start of the file, each with whether it was read whole."""
    lines: list[tuple[str, bool]] = []
    with open(path, "rb") as stream:
        raw = stream.readline(SNIFF_LINE_BYTES).removeprefix(_BOM)
        while raw and len(lines) < SNIFF_LINES:
            whole = raw.endswith(b"\n") or len(raw) < SNIFF_LINE_BYTES
            # Undecodable bytes do not change the shape of a line; the reader reports them with path:line.
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.strip():
                lines.append((text, whole))
            if not whole:
                break  # the rest of a very long line would read as more lines
            raw = stream.readline(SNIFF_LINE_BYTES)
    return lines


def _is_json_object(text: str, whole: bool) -> bool:
    if not text.lstrip().startswith("{"):
        return False
    if not whole:
        return True  # too long to parse here; the JSON reader checks it
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def sniff_format(path: str) -> tuple[str | None, str]:
    """The format the first non-blank lines show (None when they do not tell), and why."""
    from ner.conll import DOCSTART, is_tag

    lines = _sniff_lines(path)
    if not lines:
        return "text", "it holds no text"
    n = len(lines)
    json_lines = sum(_is_json_object(text, whole) for text, whole in lines)
    if json_lines == n:
        return "jsonl", f"its first {n} non-blank lines are JSON objects"
    if json_lines:
        return None, f"{json_lines} of its first {n} non-blank lines are JSON objects, the others are not"
    if any(text.split(maxsplit=1)[0].lstrip("\ufeff") == DOCSTART for text, _ in lines):
        return "conll", "it has -DOCSTART- lines"
    # A tab inside the line separates columns; one that only indents prose does not.
    tabbed = [text.strip().split("\t") for text, _ in lines if "\t" in text.strip()]
    if tabbed:
        if len(tabbed) < n or len({len(row) for row in tabbed}) > 1:
            return None, "some of its first lines are tab-separated, but not all with the same number of columns"
        fields = [[field.strip() for field in row] for row in tabbed]
        if all(is_tag(row[-1]) for row in fields):
            return "conll", "its first lines are tab-separated columns ending in a tag"
        if any(" " in field for row in fields for field in row):
            return None, "its first lines are tab-separated, but with spaces inside columns and no tag column"
        return "conll", "its first lines are tab-separated columns (no tag column: read without gold tags)"
    rows = [text.split() for text, _ in lines]
    if all(len(row) == 1 for row in rows):
        return None, "its first lines hold one word each: CoNLL words without tags, or one-word text lines?"
    tagged = [row for row in rows if len(row) > 1 and is_tag(row[-1])]
    if len(tagged) == n and n > 1 and len({len(row) for row in rows}) == 1:
        return "conll", f"its first {n} lines are {len(rows[0])} space-separated columns ending in a tag"
    if 2 * len(tagged) >= n:
        return None, f"{len(tagged)} of its first {n} non-blank lines end in a word that reads as a tag (O, B-X, ...)"
    return "text", "its first lines are neither CoNLL token lines nor JSON objects"


def detect_format(path: str, input_format: str | None = None, *, text_per_file: bool = False) -> str:
    """The input format: as given, else from the extension, else from the content; logged with the reason."""
    if input_format is not None:
        if input_format not in FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(FORMATS)}, not {input_format!r}")
        if text_per_file and input_format != "text":
            raise ValueError(f"--text_per_file is for raw text; it cannot be used with --input_format {input_format}")
        return input_format
    suffix = Path(path).suffix.lower()
    if text_per_file:
        found, why = "text", "--text_per_file"
    elif suffix in EXTENSIONS:
        found, why = EXTENSIONS[suffix], f"the extension {suffix}"
    else:
        found, why = sniff_format(path)
        if found is None:
            raise DataFileError(
                path, None, f"cannot tell the input format from the extension ({suffix or 'none'}) or the content: "
                f"{why}; give --input_format conll, jsonl or text",
            )
        why = f"its content ({why})"
    logger.info("%s: reading as %s, from %s", path, found, why)
    return found


# --- reading --------------------------------------------------------------------------------------


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; lines end in LF, CRLF or CR, as Python's universal newlines."""
    from ner.records import decode_utf8

    number = 0
    with open(path, "rb") as stream:
        for raw in stream:
            text = decode_utf8(path, number + 1, raw.removeprefix(_BOM) if number == 0 else raw)
            for piece in text.removesuffix("\n").removesuffix("\r").split("\r"):
                number += 1
                yield number, piece


def _conll_records(path: str) -> Iterator[Record]:
    from ner.conll import read_conll

    # As in training, a file without -DOCSTART- lines gets no document context.
    has_documents = False
    for sentence in read_conll(path, tags_optional=True):
        has_documents = has_documents or sentence.doc_start
        # The gold column as run_ner.py writes it: IOB1's entities opened by I- read as B- (ner.schemes.as_scored).
        gold = as_scored(sentence.tags) if sentence.tags is not None else None
        yield Record(id=f"{path}:{sentence.line}", words=sentence.words, gold=gold,
                     document=sentence.document_id if has_documents else None, doc_start=sentence.doc_start)


def _text_records(path: str, text_per_file: bool) -> Iterator[Record]:
    from ner.inference import split_words

    if text_per_file:
        from ner.records import decode_utf8

        text = decode_utf8(path, 1, Path(path).read_bytes().removeprefix(_BOM))
        words, offsets = split_words(text)
        yield Record(id=path, words=words, text=text, offsets=offsets, document=0)
        return
    document, starts = 0, True
    for number, line in _lines(path):
        if not line.strip():
            if not starts:
                document += 1  # a blank line ends the document (the paragraph)
            starts = True
            continue
        words, offsets = split_words(line)
        yield Record(id=number, words=words, text=line, offsets=offsets, document=document, doc_start=starts)
        starts = False


def _jsonl_records(path: str) -> Iterator[Record]:
    from ner.inference import split_words

    document, previous = -1, None
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(path, number, f"not valid JSON ({error.msg} at column {error.colno}); expected "
                                'one object per line, e.g. {"words": ["a", "b"]} or {"text": "a b"}') from None
        if not isinstance(record, dict) or not ({"words", "text"} & set(record)):
            raise DataFileError(path, number, 'expected an object with "words" (a list of strings) or "text".')
        text, offsets = None, None
        if "words" in record:
            words = record["words"]
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise DataFileError(path, number, '"words" must be a list of strings.')
        elif isinstance(record["text"], str):
            text = record["text"]
            words, offsets = split_words(text)
        else:
            raise DataFileError(path, number, f'"text" must be a string, found {type(record["text"]).__name__}.')
        key = record.get(DOCUMENT_FIELD)
        if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int, float))):
            raise DataFileError(path, number, f'"{DOCUMENT_FIELD}" must be a string or a number, found '
                                f"{json.dumps(key)[:40]}; records with the same value in a row form one document")
        starts = key is not None and (previous is None or key != previous)
        if starts:
            document += 1
        previous = key
        yield Record(id=record.get("id", number), words=words, text=text, offsets=offsets,
                     document=document if key is not None else None, doc_start=starts, document_id=key, fields=record)


def read_records(path: str, input_format: str, *, text_per_file: bool = False) -> Iterator[Record]:
    """The inputs of ``path``, one `Record` per sentence (CoNLL), line or file (text), or object (JSON lines)."""
    if input_format == "conll":
        return _conll_records(path)
    if input_format == "text":
        return _text_records(path, text_per_file)
    if input_format == "jsonl":
        return _jsonl_records(path)
    raise ValueError(f"input_format must be one of {', '.join(FORMATS)}, not {input_format!r}")


# --- writing and the command ----------------------------------------------------------------------


def write_records(out: TextIO, records: list[Record], tagged: list, predictor: Any, output_format: str) -> None:
    """CoNLL: ``word[<TAB>gold]<TAB>predicted`` lines; JSON lines: id, text, words, tags and entity spans;
    spans: the input record's own fields, ``text`` and the entities as ``spans`` and ``label`` (`ner.spans.span_output`)."""
    from ner.inference import entity_dicts
    from ner.spans import span_output

    for record, result in zip(records, tagged):
        if output_format == "conll":
            from ner.conll import write_sentence

            tags = (result.tags,) if record.gold is None else (record.gold, result.tags)
            write_sentence(out, (result.words, *tags), doc_start=record.doc_start)
            continue
        # Offsets index the raw text when there is one, else the words joined by single spaces.
        entities = predictor.entities(result, record.text, record.offsets)
        if output_format == "spans":
            text = record.text if record.text is not None else " ".join(result.words)
            row = span_output(record.fields or {"id": record.id}, text, entity_dicts(entities))
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            continue
        row: dict[str, Any] = {"id": record.id}
        if record.document_id is not None:
            row[DOCUMENT_FIELD] = record.document_id
        if record.text is not None:
            row["text"] = record.text
        row.update(words=result.words, tags=result.tags, entities=entity_dicts(entities))
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def predict_file(
    predictor: Any,
    input_path: str,
    output: TextIO,
    *,
    input_format: str | None = None,
    output_format: str | None = None,
    chunk_size: int = 2048,
    text_per_file: bool = False,
    progress: bool = True,
) -> int:
    """Tag ``input_path`` into ``output``, a chunk at a time; returns the number of inputs tagged."""
    from tqdm.auto import tqdm

    from ner.sharded import input_chunks, tag_chunk

    input_format = detect_format(input_path, input_format, text_per_file=text_per_file)
    output_format = output_format or ("conll" if input_format == "conll" else "jsonl")
    records = read_records(input_path, input_format, text_per_file=text_per_file)
    with_context = predictor.model.config.context_size > 0
    done = 0
    with tqdm(desc=f"Tagging {Path(input_path).name}", unit=" inputs", disable=not progress) as bar:
        # The same chunks, tagged and written the same way, as each process of `accelerate launch` (ner/sharded.py).
        for chunk in input_chunks(records, chunk_size, with_context=with_context):
            tag_chunk(predictor, chunk, output, output_format)
            done += len(chunk)
            bar.update(len(chunk))
    return done


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command's parser, and its ``predict`` sub-command's."""
    parser = argparse.ArgumentParser(prog="python -m ner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="tag a file with a trained output folder")
    predict.add_argument("--model", required=True, help="output folder of run_ner.py (or any folder this toolkit wrote)")
    predict.add_argument("--input", required=True, help="input file")
    predict.add_argument("--output", default="-", help="output file (default: standard output)")
    predict.add_argument("--input_format", choices=FORMATS, help="default: from the extension (.conll/.tsv/..., .jsonl/.json), "
                         "else from the first lines (CoNLL token lines or -DOCSTART-, JSON objects, or text)")
    predict.add_argument("--output_format", choices=OUTPUT_FORMATS, help="default: conll for conll input, else jsonl; "
                         "spans: JSON lines of {..., \"text\", \"spans\": [{\"start\", \"end\", \"label\"}], \"label\": "
                         "[[start, end, label]]} that doccano, Prodigy and run_ner.py read (the input record's other fields kept)")
    predict.add_argument("--debug", action="store_true", help="show the Python traceback of an error (or set NER_DEBUG=1)")
    predict.add_argument("--text_per_file", action="store_true", help="raw text: the whole file is one input (default: "
                         "each line is one, and a blank line ends a document for a model with document context)")
    predict.add_argument("--batch_size", type=int, default=64)
    predict.add_argument("--chunk_size", type=int, default=2048, help="inputs read, tagged and written at a time")
    predict.add_argument("--max_seq_length", type=int, default=None, help="sub-tokens per window, [CLS]/[SEP] "
                         "included (default: the model's limit, at most 512; more than the limit is refused)")
    predict.add_argument("--stride", type=int, default=None, help="sub-tokens shared by neighbouring windows")
    predict.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    predict.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="precision: auto = bf16 (else fp16) on a GPU, float32 on a CPU; bfloat16 also on a CPU")
    return parser, predict


def main(argv: list[str] | None = None) -> int:
    """Run the command. From the shell (``argv`` None), bad input prints one ``error:`` line and exits 2;
    called with ``argv`` (from Python), it raises, as the library does."""
    parser, predict = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if argv is not None:
        return _predict(args)
    try:
        return _predict(args)
    except (DataFileError, ValueError, FileNotFoundError) as error:
        # The message names the file (and line) and the fix; a traceback would only bury it.
        predict.exit(2, f"{predict.prog}: error: {error}\n")


def check_predict_arguments(args: argparse.Namespace) -> None:
    """Refuse what the command cannot do before the model loads and the work starts: a missing input, an output
    that is a folder or lies in no folder, counts below 1."""
    if os.path.isdir(args.input):
        raise ValueError(f"--input {args.input}: a folder; give a file (one command per file).")
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input}: no such file")
    if args.output != "-":
        if os.path.isdir(args.output):
            raise ValueError(f"--output {args.output}: a folder; give the path of the file to write.")
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            raise ValueError(f"--output {args.output}: no folder {parent} to write it in; make it first.")
        if os.path.abspath(args.output) == os.path.abspath(args.input):
            raise ValueError(f"--output {args.output} is the input file; give another path.")
    if not os.path.isdir(args.model) and os.path.exists(args.model):
        raise ValueError(f"--model {args.model}: a file; give the output folder of run_ner.py.")
    check_model_path("--model", args.model)
    check_numbers(vars(args), {})
    for flag, value in (("--batch_size", args.batch_size), ("--chunk_size", args.chunk_size)):
        if value < 1:
            raise ValueError(f"{flag} must be 1 or more, got {value}.")
    check_window_options(args.max_seq_length, args.stride)


def _predict(args: argparse.Namespace) -> int:
    from ner.inference import NerPredictor
    from ner.sharded import predict_to_file, process_state

    check_predict_arguments(args)
    # Decided before the model loads, so a file the command cannot read fails fast.
    input_format = detect_format(args.input, args.input_format, text_per_file=args.text_per_file)
    # Under `accelerate launch` each process tags its share of the chunks on its own device.
    state, device = process_state(args.device, args.output)
    predictor = NerPredictor(args.model, device=device, batch_size=args.batch_size,
                             max_seq_length=args.max_seq_length, stride=args.stride, dtype=args.dtype)
    options = dict(input_format=input_format, output_format=args.output_format, chunk_size=args.chunk_size,
                   text_per_file=args.text_per_file)
    if args.output == "-":
        count = predict_file(predictor, args.input, sys.stdout, **options)
    else:
        count = predict_to_file(predictor, args.input, args.output, state=state, model_dir=args.model,
                                progress=state.is_main_process, **options)
    logger.info("Tagged %d inputs of %s into %s", count, args.input, args.output)
    return 0
