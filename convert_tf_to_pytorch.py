#!/usr/bin/env python
"""Convert a TensorFlow BERT / BioBERT / SciBERT checkpoint into a Hugging Face folder; no TensorFlow needed.

    python convert_tf_to_pytorch.py biobert_v1.1_pubmed                      # finds the three files itself
    python convert_tf_to_pytorch.py --tf_checkpoint biobert_v1.1_pubmed/model.ckpt-1000000 \\
        --bert_config biobert_v1.1_pubmed/bert_config.json --vocab biobert_v1.1_pubmed/vocab.txt --output_dir out
    python convert_tf_to_pytorch.py biobert_v1.1_pubmed --list               # variables, shapes, dtypes
    python convert_tf_to_pytorch.py my_ner_run --label_list labels.txt       # fine-tuned: keeps the classifier

The output folder (config.json, model.safetensors, tokenizer files, README.md) loads with
``from_pretrained`` and ``run_ner.py --model_name_or_path``. A fine-tuned checkpoint (BioBERT's run_ner,
Google's run_classifier) becomes a ``BertForTokenClassification`` folder with its classifier. The work is
done in ``ner.sources.tf_conversion``; a release folder's files are found by ``ner.sources.staging.find_release_files``,
as ``run_ner.py`` finds them.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from ner.sources.staging import find_release_files
from ner.sources.tf_checkpoint import TFCheckpoint
from ner.sources.tf_conversion import convert_tf_checkpoint


@dataclass
class ConversionArguments:
    tf_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Checkpoint prefix, without .index/.data-*: path/model.ckpt-1000000, path/bert_model.ckpt."},
    )
    bert_config: str | None = field(default=None, metadata={"help": "The release's bert_config.json."})
    vocab: str | None = field(default=None, metadata={"help": "The release's WordPiece vocab.txt."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder to write (default with a FOLDER argument: FOLDER-pytorch beside it)."}
    )
    do_lower_case: bool | None = field(
        default=None,
        metadata={
            "help": "true/false: lowercase the input or not (default: false when the vocabulary has capitalised word "
            "pieces or the folder name says cased, else true)."
        },
    )
    label_list: str | None = field(
        default=None,
        metadata={
            "help": "For a fine-tuned checkpoint (output_weights/output_bias): a file naming the classifier's outputs, "
            "one label per line in output order (default: LABEL_0, LABEL_1, ...). Fine-tuned checkpoints need no "
            "other flag: the classifier is kept and the folder loads as BertForTokenClassification."
        },
    )
    allow_missing: bool = field(
        default=False,
        metadata={
            "help": "Convert even if BertForPreTraining weights are missing (e.g. an encoder-only export without the "
            "pooler or cls/ heads); they are random when loaded. Not needed for a fine-tuned checkpoint: one with "
            "an output_weights/output_bias classifier converts without it."
        },
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace --output_dir if it exists."})
    list_variables: bool = field(
        default=False,
        metadata={"aliases": ["--list"], "help": "Print every variable's name, shape and dtype, then stop."},
    )
    skip_checksums: bool = field(default=False, metadata={"help": "Do not verify CRC32C checksums (not recommended)."})


def parse_arguments(argv: list[str] | None) -> tuple[ConversionArguments, str | None]:
    parser = HfArgumentParser(ConversionArguments)
    parser.add_argument("folder", nargs="?", help="A release folder: the checkpoint, bert_config.json and vocab.txt.")
    args, extra = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    return args, extra.folder


def resolve_files(args: ConversionArguments, folder: str | None) -> tuple[str, str | None, str | None, str | None]:
    """(checkpoint prefix, config, vocab, output folder) from the flags, and from the folder for what they leave out.

    The folder's files are found as ``run_ner.py`` finds them (``ner.sources.staging.find_release_files``); where it
    holds several checkpoints, TF's ``checkpoint`` file picks the newest.
    """
    if folder is None and args.tf_checkpoint is None:
        raise ValueError(
            "Give a release folder, or --tf_checkpoint PREFIX --bert_config FILE --vocab FILE --output_dir DIR."
        )
    if folder is not None and not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such folder. Give a release folder, or the prefix with --tf_checkpoint.")
    release = find_release_files(Path(folder)) if folder is not None else None
    prefix, config, vocab = args.tf_checkpoint, args.bert_config, args.vocab
    if release is not None and prefix is None:
        prefix = release.tf_prefix("--tf_checkpoint")
        if prefix is None:
            raise ValueError(
                f"{folder}: no TensorFlow checkpoint (PREFIX.index with PREFIX.data-*) in it; found: {release.found}."
            )
    if args.list_variables:
        return str(prefix), None, None, None
    if release is not None and config is None:
        if release.config is None:
            raise ValueError(
                f"{folder}: no bert_config.json in it (found: {release.found}); pass it with --bert_config PATH."
            )
        config = release.config
    if release is not None and vocab is None:
        if release.vocab is None:
            raise ValueError(f"{folder}: no vocab.txt in it (found: {release.found}); pass it with --vocab PATH.")
        vocab = release.vocab
    output = args.output_dir or (f"{str(Path(folder)).rstrip('/')}-pytorch" if folder is not None else None)
    if output is not None and os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output_dir {output}: a file is there; give the path of a folder.")
    flags = {"--bert_config": config, "--vocab": vocab, "--output_dir": output}
    absent = [flag for flag, value in flags.items() if value is None]
    if absent:
        raise ValueError(f"Missing {', '.join(absent)} (or give the release folder instead of the separate files).")
    return str(prefix), str(config), str(vocab), output


def list_variables(prefix: str, *, verify_checksums: bool) -> None:
    """Like ``tf.train.list_variables``, with dtypes and (TF2) each variable's own name."""
    with TFCheckpoint(prefix, verify_checksums=verify_checksums) as checkpoint:
        full_names = checkpoint.object_graph_names()
        rows = [
            (name, str(list(shape)), dtype, full_names.get(name, "")) for name, shape, dtype in checkpoint.variables()
        ]
        width = max((len(row[0]) for row in rows), default=0)
        for name, shape, dtype, full_name in rows:
            print(f"{name:<{width}}  {shape:<16} {dtype}{f'  ({full_name})' if full_name else ''}")
        total = sum(entry.size for entry in checkpoint.entries.values())
        print(f"{len(rows)} variables, {total / 1e6:.1f} MB in {checkpoint.num_shards} shard(s): {checkpoint.prefix}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    args, folder = parse_arguments(argv)
    prefix, config, vocab, output = resolve_files(args, folder)
    if args.list_variables:
        list_variables(prefix, verify_checksums=not args.skip_checksums)
        return 0
    summary = convert_tf_checkpoint(
        prefix, config, vocab, output,
        do_lower_case=args.do_lower_case,
        label_list=args.label_list,
        allow_missing=args.allow_missing,
        overwrite=args.overwrite_output_dir,
        verify_checksums=not args.skip_checksums,
        progress=True,
    )
    skipped = ", ".join(f"{count} {what}" for what, count in summary.skipped.items()) or "nothing"
    missing = f"; {len(summary.missing)} missing (random when loaded)" if summary.missing and not summary.labels else ""
    classifier = f"; a token classifier over {' '.join(summary.labels)}" if summary.labels else ""
    print(
        f"Wrote {summary.output_dir} in {summary.seconds:.1f} s: {summary.tensors} tensors, {summary.parameters:,} "
        f"parameters, do_lower_case={summary.do_lower_case}{classifier}; skipped {skipped}{missing}"
    )
    return 0


if __name__ == "__main__":
    from ner.errors import run_cli

    sys.exit(run_cli(main))  # bad input: one `error: ...` line (--debug or NER_DEBUG=1: the traceback)
