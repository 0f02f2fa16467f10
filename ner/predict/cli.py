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
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

from ner.data.alignment import check_window_options
from ner.errors import DataFileError, run_cli
from ner.limits import Range, check_numbers
from ner.predict.export import export_folder
from ner.predict.io import FORMATS, OUTPUT_FORMATS, detect_format, read_records
from ner.predict.predictor import NerPredictor
from ner.predict.sharded import input_chunks, predict_to_file, process_state, tag_chunk
from ner.sources.staging import check_model_path

logger = logging.getLogger(__name__)

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
    input_format = detect_format(input_path, input_format, text_per_file=text_per_file)
    output_format = output_format or ("conll" if input_format == "conll" else "jsonl")
    records = read_records(input_path, input_format, text_per_file=text_per_file)
    with_context = predictor.config.context_size > 0
    done = 0
    with tqdm(desc=f"Tagging {Path(input_path).name}", unit=" inputs", disable=not progress) as bar:
        # The same chunks, tagged and written the same way, as each process of `accelerate launch` (ner/predict/sharded.py).
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
    predict.add_argument("--min_confidence", type=float, default=0.0, help="drop entities whose confidence (the "
                         "probability of the whole entity, calibrated where the folder has calibration.json) is below "
                         "this, 0 to 1: their words are tagged O; the log counts them (default 0: keep all)")
    export = commands.add_parser(
        "export", help="an ONNX Runtime folder of a trained folder, behind a parity gate (see ner/predict/export.py)"
    )
    export.add_argument("model", help="output folder of run_ner.py")
    export.add_argument("output", help="the folder to write (must not exist)")
    export.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantization (default: float32)")
    export.add_argument("--check_file", help="CoNLL file the parity gate tags (default: the folder's eval_predictions.txt, "
                        "else predict_predictions.txt)")
    export.add_argument("--min_agreement", type=float, help="least share of equal word tags (default 0.999, int8 0.99)")
    export.add_argument("--max_f1_drop", type=float, help="largest F1 drop against the gold tags (default 0.001, int8 0.003)")
    export.add_argument("--batch_size", type=int, default=64)
    export.add_argument("--debug", action="store_true", help="show the Python traceback of an error (or set NER_DEBUG=1)")
    return parser, predict


def main(argv: list[str] | None = None) -> int:
    """Run the command. From the shell (``argv`` None), bad input prints one ``error:`` line and exits 2;
    called with ``argv`` (from Python), it raises, as the library does."""
    parser, predict = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    run = _export if args.command == "export" else _predict
    if argv is not None:
        return run(args)
    try:
        return run(args)
    except (DataFileError, ValueError, FileNotFoundError) as error:
        # The message names the file (and line) and the fix; a traceback would only bury it.
        predict.exit(2, f"{predict.prog}: error: {error}\n")


def _export(args: argparse.Namespace) -> int:
    check_numbers(vars(args), {"batch_size": Range(1)})
    if not os.path.isdir(args.model):
        raise ValueError(f"{args.model}: no such folder; give the output folder of run_ner.py.")
    report = export_folder(
        args.model, args.output, quantize=args.quantize, check_file=args.check_file, min_agreement=args.min_agreement,
        max_f1_drop=args.max_f1_drop, batch_size=args.batch_size,
    )
    print(json.dumps(report))
    return 0


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
        parent = Path(os.path.abspath(args.output)).parent
        while not parent.exists():  # folders that do not exist yet are made
            parent = parent.parent
        if not parent.is_dir():
            raise ValueError(f"--output {args.output}: {parent} is a file, not a folder to write in.")
        if os.path.abspath(args.output) == os.path.abspath(args.input):
            raise ValueError(f"--output {args.output} is the input file; give another path.")
    if not os.path.isdir(args.model) and os.path.exists(args.model):
        raise ValueError(f"--model {args.model}: a file; give the output folder of run_ner.py.")
    check_model_path("--model", args.model)
    check_numbers(vars(args), {"batch_size": Range(1), "chunk_size": Range(1), "min_confidence": Range(0.0, 1.0)})
    check_window_options(args.max_seq_length, args.stride)


def _predict(args: argparse.Namespace) -> int:
    check_predict_arguments(args)
    # Decided before the model loads, so a file the command cannot read fails fast.
    input_format = detect_format(args.input, args.input_format, text_per_file=args.text_per_file)
    # Under `accelerate launch` each process tags its share of the chunks on its own device.
    state, device = process_state(args.device, args.output)
    predictor = NerPredictor(args.model, device=device, batch_size=args.batch_size,
                             max_seq_length=args.max_seq_length, stride=args.stride, dtype=args.dtype,
                             min_confidence=args.min_confidence)
    options = dict(input_format=input_format, output_format=args.output_format, chunk_size=args.chunk_size,
                   text_per_file=args.text_per_file)
    if args.output == "-":
        count = predict_file(predictor, args.input, sys.stdout, **options)
    else:
        count = predict_to_file(predictor, args.input, args.output, state=state, model_dir=args.model,
                                progress=state.is_main_process, **options)
    logger.info("Tagged %d inputs of %s into %s", count, args.input, args.output)
    if args.min_confidence:
        found = predictor.dropped + predictor.kept
        logger.info(
            "--min_confidence %g: dropped %d of the %d entities found%s (their words tagged O).", args.min_confidence,
            predictor.dropped, found, f" by process {state.process_index}" if state.num_processes > 1 else "",
        )
    return 0


def console_main() -> None:
    """The ``ner`` command an install of the package puts on the PATH: ``ner predict ...``, as ``python -m ner``."""
    sys.exit(run_cli(main))
