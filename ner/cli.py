"""``python -m ner predict``: tag CoNLL, JSON-lines or raw-text files with a trained folder, streaming.

    python -m ner predict --model out --input news.txt --output news.jsonl         # raw text, a document per line
    python -m ner predict --model out --input test.conll --output test.pred.conll   # words (and gold) in CoNLL

Input is read and written in chunks (``--chunk_size`` sentences), so memory stays bounded whatever the
file size; within a chunk examples are batched by length.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ner.errors import DataFileError

logger = logging.getLogger(__name__)

FORMATS = ("conll", "jsonl", "text")


def guess_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".conll", ".conll03", ".iob", ".bio", ".tsv"):
        return "conll"
    return "text"


def read_records(path: str, input_format: str, *, text_per_file: bool = False) -> Iterator[dict[str, Any]]:
    """Records with ``words`` (and ``gold``, ``text``/``offsets``, ``id``, ``document_id``, ``doc_start``)."""
    from ner.inference import split_words

    if input_format == "conll":
        from ner.conll import read_conll

        for sentence in read_conll(path):
            yield {"words": sentence.words, "gold": sentence.tags, "document_id": sentence.document_id,
                   "doc_start": sentence.doc_start, "id": f"{path}:{sentence.line}"}
        return
    with open(path, encoding="utf-8-sig", newline="") as stream:
        if input_format == "text" and text_per_file:
            text = stream.read()
            words, offsets = split_words(text)
            yield {"text": text, "words": words, "offsets": offsets, "id": path, "document_id": 0, "doc_start": False}
            return
        for number, line in enumerate(stream, start=1):
            line = line.rstrip("\r\n") if input_format == "text" else line
            if not line.strip():
                continue
            if input_format == "text":
                words, offsets = split_words(line)
                yield {"text": line, "words": words, "offsets": offsets, "id": number, "document_id": number, "doc_start": False}
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFileError(path, number, f"not valid JSON ({error.msg} at column {error.colno}).") from None
            if not isinstance(record, dict) or not ({"words", "text"} & set(record)):
                raise DataFileError(path, number, 'expected an object with "words" (a list of strings) or "text".')
            if "words" in record:
                words = record["words"]
                if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                    raise DataFileError(path, number, '"words" must be a list of strings.')
                offsets = None
            else:
                words, offsets = split_words(str(record["text"]))
            yield {**record, "words": words, "offsets": offsets, "id": record.get("id", number),
                   "document_id": record.get("document_id", number), "doc_start": False}


def write_records(out: TextIO, records: list[dict[str, Any]], tagged: list, predictor: Any, output_format: str) -> None:
    for record, result in zip(records, tagged):
        if output_format == "conll":
            if record.get("doc_start"):
                out.write("-DOCSTART-\tO\tO\n\n" if "gold" in record else "-DOCSTART-\tO\n\n")
            gold = record.get("gold")
            for i, (word, tag) in enumerate(zip(result.words, result.tags)):
                out.write(f"{word}\t{gold[i]}\t{tag}\n" if gold is not None else f"{word}\t{tag}\n")
            out.write("\n")
            continue
        from ner.inference import entity_dicts

        entities = predictor.entities(result, record.get("text"), record.get("offsets"))
        row = {"id": record["id"]}
        if record.get("text") is not None:
            row["text"] = record["text"]
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
    """Tag ``input_path`` into ``output``, a chunk at a time; returns the number of sentences."""
    from tqdm.auto import tqdm

    from ner.inference import chunks

    input_format = input_format or guess_format(input_path)
    output_format = output_format or ("conll" if input_format == "conll" else "jsonl")
    records = read_records(input_path, input_format, text_per_file=text_per_file)
    # With document context, a chunk ends only where a -DOCSTART- document does, so context is complete.
    with_context = input_format == "conll" and predictor.model.config.context_size > 0
    boundary = (lambda record: record.get("doc_start")) if with_context else (lambda record: True)
    done = 0
    with tqdm(desc=f"Tagging {Path(input_path).name}", unit=" sentences", disable=not progress) as bar:
        for chunk in chunks(records, chunk_size, boundary=boundary):
            documents = [r["document_id"] for r in chunk] if with_context and any(r["doc_start"] for r in chunk) else None
            tagged = predictor.tag([r["words"] for r in chunk], documents=documents)
            write_records(output, chunk, tagged, predictor, output_format)
            done += len(chunk)
            bar.update(len(chunk))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="tag a file with a trained output folder")
    predict.add_argument("--model", required=True, help="output folder of run_ner.py (or any folder this toolkit wrote)")
    predict.add_argument("--input", required=True, help="input file")
    predict.add_argument("--output", default="-", help="output file (default: standard output)")
    predict.add_argument("--input_format", choices=FORMATS, help="default: from the extension (.conll/.tsv, .jsonl, else text)")
    predict.add_argument("--output_format", choices=("conll", "jsonl"), help="default: conll for conll input, else jsonl")
    predict.add_argument("--text_per_file", action="store_true", help="raw text: the whole file is one document (default: a line)")
    predict.add_argument("--batch_size", type=int, default=64)
    predict.add_argument("--chunk_size", type=int, default=2048, help="sentences read, tagged and written at a time")
    predict.add_argument("--max_seq_length", type=int, default=None, help="sub-tokens per window (default: the model's limit)")
    predict.add_argument("--stride", type=int, default=None, help="sub-tokens shared by neighbouring windows")
    predict.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    predict.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="precision: auto = bf16 (else fp16) on a GPU, float32 on a CPU; bfloat16 also on a CPU")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    from ner.files import atomic_writer
    from ner.inference import NerPredictor

    predictor = NerPredictor(args.model, device=args.device, batch_size=args.batch_size,
                             max_seq_length=args.max_seq_length, stride=args.stride, dtype=args.dtype)
    options = dict(input_format=args.input_format, output_format=args.output_format, chunk_size=args.chunk_size,
                   text_per_file=args.text_per_file)
    if args.output == "-":
        count = predict_file(predictor, args.input, sys.stdout, **options)
    else:
        with atomic_writer(args.output) as out:
            count = predict_file(predictor, args.input, out, **options)
    logger.info("Tagged %d sentences of %s into %s", count, args.input, args.output)
    return 0
