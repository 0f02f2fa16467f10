#!/usr/bin/env python
"""Fine-tune, evaluate and predict named entity recognition with a BERT-family encoder.

    python run_ner.py --model_name_or_path bert-base-cased --train_file train.txt \\
        --validation_file dev.txt --test_file test.txt --output_dir out --do_train --do_eval --do_predict
    accelerate launch run_ner.py config.yaml        # the same, on any number of GPUs, from a config file

``python run_ner.py --help`` lists every option. The work is done in the ``ner`` package; this file
is the glue: arguments -> read -> labels -> model -> tokenise/align -> Trainer -> train/eval/predict.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field, fields

import datasets
import transformers
from transformers import HfArgumentParser, set_seed

from ner.data.alignment import (
    check_stride, check_window_options, require_fast_tokenizer, resolve_max_seq_length, tokenize_splits,
)
from ner.data.labels import check_predictable, prepare_tags, read_label_file
from ner.limits import Range, check_numbers
from ner.model.configuration import HEAD_SETTINGS, given_head_settings, head_argument, head_hyperparameters
from ner.model.modeling import load_model
from ner.outputs.model_card import CardData
from ner.outputs.publishing import finish_output_dir, write_split_outputs
from ner.outputs.results import SCORED_SPLITS, SPLITS, Results, SplitScores
from ner.predict.calibration import calibrate_folder, split_confidence
from ner.predict.predictor import NerPredictor
from ner.sources.staging import check_model_path, prepare_model_source
from ner.sources.tokenizer import check_vocabulary, load_tokenizer
from ner.training.checkpoints import resolve_checkpoint, start_run
from ner.training.arguments import NerTrainingArguments
from ner.training.recipe import RECIPE, WHY
from ner.training.trainer import WordLevelMetrics, build_trainer, evaluate_split

logger = logging.getLogger("run_ner")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={
            "help": "Pretrained BERT: a Hub name (bert-base-cased), a Hugging Face folder, an original-release folder "
            "(bert_config.json + vocab.txt + pytorch_model.bin/model.safetensors/weights.tar.gz), a weights file, "
            "or a TensorFlow checkpoint folder or prefix."
        }
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Config name or path (e.g. your bert_config.json), if not the model's own."}
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Tokenizer name or path, if not the model's own: a folder, a vocab.txt's folder, or a SentencePiece tokenizer.model."},
    )
    do_lower_case: bool | None = field(
        default=None,
        metadata={"help": "--do_lower_case true|false forces lowercasing (default: follow the tokenizer, but turn it off for a cased vocabulary)."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are kept."})
    model_revision: str = field(default="main", metadata={"help": "Hub revision: branch, tag or commit."})
    token: str | None = field(
        default=None, metadata={"help": "Hub token for private models/datasets (default: the one `hf auth login` stored)."}
    )
    # Head settings: help and defaults are declared on ner.model.configuration.NerBertConfig; None (False for a switch)
    # is "not given", so that a fine-tuned model keeps its own.
    head_layers: int | None = head_argument("head_layers")
    head_hidden_size: int | None = head_argument("head_hidden_size")
    head_activation: str | None = head_argument("head_activation")
    classifier_dropout: float | None = head_argument("classifier_dropout")
    use_crf: bool | None = head_argument("use_crf", nargs="?", const=True)  # --use_crf, --use_crf true|false
    crf_token_loss: float | None = head_argument("crf_token_loss")
    decoding: str | None = head_argument("decoding")
    new_classifier: bool = field(
        default=False,
        metadata={
            "help": "Discard the trained classifier (and CRF) of a fine-tuned --model_name_or_path and train a new one "
            "for the data's labels; only the encoder is kept. Without it, a fine-tuned model keeps its own labels, "
            "training data with other tags is refused, and evaluation tags it cannot predict count as misses."
        },
    )


@dataclass
class DataArguments:
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Training data, its format from the extension: .json/.jsonl (token rows {\"tokens\", \"ner_tags\"}, "
            "or span annotations {\"text\", \"spans\"/\"entities\"/\"label\"}), .csv (token rows), else CoNLL "
            "(word ... tag per line)."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation (dev) data, as --train_file."})
    test_file: str | None = field(default=None, metadata={"help": "Test data, as --train_file, for --do_predict."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset instead of files (e.g. a CoNLL-2003 copy)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Column of word lists, in a Hub dataset or a JSON/CSV file (default: tokens, else words); in a "
            "span file, the field of the text (default: text)."
        },
    )
    label_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Column of tag lists, in a Hub dataset or a JSON/CSV file (default: ner_tags, else tags); in a "
            "span file, the field of the spans (default: spans, else entities, else label)."
        },
    )
    word_column: int = field(default=0, metadata={"help": "CoNLL column of the word (0-based)."})
    label_column: int = field(default=-1, metadata={"help": "CoNLL column of the tag (0-based; negative counts from the end)."})
    delimiter: str | None = field(
        default=None, metadata={"help": "CoNLL column separator (default: tab if the file has tabs, else any whitespace)."}
    )
    label_list: str | None = field(
        default=None,
        metadata={
            "help": "File with one label per line, in model order (default: built from all given splits); it also names "
            "the integer tags of JSON/CSV files (the first line names tag 0)."
        },
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={
            "help": "Most sub-tokens per example, [CLS]/[SEP] included (default: the model's limit, at most 512); "
            "longer sentences become overlapping windows, nothing is truncated."
        },
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={
            "help": "Train on every sub-token of a word (its later pieces labelled I-TYPE), not just the first. Training "
            "data only: evaluation and prediction read one position per word. Not with a CRF."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training sentences."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation sentences."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test sentences."})
    stride: int | None = field(
        default=None,
        metadata={"help": "Sub-tokens shared by neighbouring windows of a sentence longer than max_seq_length (default: a quarter of it)."},
    )
    context_size: int | None = head_argument("context_size")
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "Arrow cache of parsed CoNLL files (default: the datasets cache)."}
    )


def split_files(data_args: DataArguments) -> dict[str, str]:
    """The file given for each split (--train_file, --validation_file, --test_file), by split name."""
    return {split.name: path for split in SPLITS if (path := getattr(data_args, f"{split.name}_file"))}


def parse_arguments(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, NerTrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, NerTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


# The head settings' declared ranges (ner.model.configuration.head_setting), checked on the command line before the data
# are read (the model checks them again when it is built).
HEAD_RANGES = {
    name: Range(setting.metadata["minimum"], setting.metadata["maximum"])
    for name, setting in HEAD_SETTINGS.items()
    if setting.metadata["minimum"] is not None or setting.metadata["maximum"] is not None
}


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: NerTrainingArguments) -> None:
    files = split_files(data_args)
    if data_args.dataset_name and files:
        raise ValueError("Give --dataset_name or --train_file/--validation_file/--test_file, not both.")
    if not data_args.dataset_name and not files:
        raise ValueError("No data: give --train_file/--validation_file/--test_file (CoNLL files) or --dataset_name.")
    for split, path in files.items():
        if os.path.isdir(path):
            raise ValueError(f"--{split}_file {path}: a folder; give the data file itself.")
        if not os.path.isfile(path):
            raise ValueError(f"--{split}_file {path}: no such file.")
    if data_args.label_list and not os.path.isfile(data_args.label_list):
        what = "a folder" if os.path.isdir(data_args.label_list) else "no such file"
        raise ValueError(f"--label_list {data_args.label_list}: {what}; give a file with one label per line.")
    folders = {"output_dir": training_args.output_dir, "logging_dir": getattr(training_args, "logging_dir", None),
               "cache_dir": model_args.cache_dir, "data_cache_dir": data_args.data_cache_dir}
    for name, folder in folders.items():
        if folder and os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--{name} {folder}: a file is there; give the path of a folder.")
    for name in ("config_name", "tokenizer_name"):
        check_model_path(f"--{name}", getattr(model_args, name))
    check_window_options(data_args.max_seq_length, data_args.stride)
    numbers = {option.name: getattr(group, option.name) for group in (model_args, data_args) for option in fields(group)}
    check_numbers(numbers, {**HEAD_RANGES, **{f"max_{split.prefix}_samples": Range(1) for split in SPLITS}})
    if not (training_args.do_train or training_args.do_eval_requested or training_args.do_predict):
        raise ValueError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    if training_args.do_train and not (data_args.train_file or data_args.dataset_name):
        raise ValueError("--do_train needs --train_file.")
    if training_args.do_predict and not (data_args.test_file or data_args.dataset_name):
        raise ValueError("--do_predict needs --test_file.")


def read_data(data_args: DataArguments, model_args: ModelArguments):
    """Every given split as a DatasetDict of words/tags, and the file (or Hub name) each came from."""
    if data_args.dataset_name:
        from ner.data.hub_datasets import load_hub_dataset

        raw = load_hub_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            text_column=data_args.text_column_name,
            label_column=data_args.label_column_name,
            cache_dir=model_args.cache_dir,
            token=model_args.token,
        )
        return raw, {split: f"{data_args.dataset_name}[{split}]" for split in raw}
    from ner.data.loading import load_data_files
    from ner.data.formats import file_format

    files = split_files(data_args)
    # The label list names integer tags, and is checked here so that a tag outside it is named at its own record.
    needs_labels = data_args.label_list and any(file_format(path) != "conll" for path in files.values())
    raw = load_data_files(
        files,
        cache_dir=data_args.data_cache_dir,
        word_column=data_args.word_column,
        label_column=data_args.label_column,
        delimiter=data_args.delimiter,
        text_column=data_args.text_column_name,
        label_column_name=data_args.label_column_name,
        label_names=read_label_file(data_args.label_list) if needs_labels else None,
        label_source=data_args.label_list,
    )
    return raw, files


def select_splits(raw, data_args: DataArguments, training_args: NerTrainingArguments):
    """Keep the splits the run uses, cut to --max_*_samples; evaluation is off without validation data.

    Returns the splits and, for the card, each kept split's sentences: (used, in the data)."""
    # --do_train/--do_eval/--do_predict and --max_{train,eval,predict}_samples: named by each split's prefix.
    wanted = {split.name: getattr(training_args, f"do_{split.prefix}") for split in SPLITS}
    limits = {split.name: getattr(data_args, f"max_{split.prefix}_samples") for split in SPLITS}
    sizes = {}
    for split in list(raw):
        if not wanted.get(split, False):
            del raw[split]
            continue
        given = len(raw[split])
        if limits[split] is not None:
            raw[split] = raw[split].select(range(min(limits[split], given)))
        sizes[split] = (len(raw[split]), given)
    if training_args.do_eval and "validation" not in raw:
        if training_args.do_eval_requested:
            raise ValueError("--do_eval needs --validation_file (or a dataset with a 'validation' split).")
        if training_args.load_best_model_at_end:
            raise ValueError("--load_best_model_at_end needs validation data: pass --validation_file.")
        training_args.do_eval = False
        training_args.eval_strategy = "no"
    return raw, sizes


def confidence_predictor(
    model_source: str, raw, files, data_args: DataArguments, training_args: NerTrainingArguments, max_seq_length: int
) -> NerPredictor | None:
    """The predictor whose confidences the reports judge: the trained output folder, its entity calibration first fitted on the
    validation data (unless --calibrate false), or, without training, the model's own folder as it is."""
    folder = training_args.output_dir if training_args.do_train else model_source
    if not os.path.isdir(folder):
        logger.info("Confidences are not reported: %s is not a local folder.", folder)
        return None
    device, batch_size = str(training_args.device), training_args.per_device_eval_batch_size
    if training_args.do_train and training_args.calibrate:
        if "validation" in raw:
            split = raw["validation"]
            name = data_args.dataset_name or files["validation"]
            calibrate_folder(
                folder, split["words"], split["tags"], split["doc_start"], data_name=name, device=device,
                batch_size=batch_size, max_seq_length=max_seq_length, stride=data_args.stride,
            )
        else:
            logger.info("Confidences are left uncalibrated: no validation data to fit them on.")
    return NerPredictor(folder, device=device, batch_size=batch_size, max_seq_length=max_seq_length, stride=data_args.stride)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the whole job; returns every metric written to ``all_results.json``."""
    model_args, data_args, training_args = parse_arguments(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    # Our own progress lines at INFO on the main process unless --log_level says otherwise.
    own_level = logging.INFO if training_args.should_log and training_args.log_level == "passive" else log_level
    for name in ("run_ner", "ner"):
        logging.getLogger(name).setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    check_arguments(model_args, data_args, training_args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and training_args.world_size == 1:
        raise ValueError(
            f"Launched as one of {os.environ['WORLD_SIZE']} processes, but this process trains alone (each would write "
            "the same output folder). On CPUs pass --use_cpu (or set ACCELERATE_USE_CPU=true) with accelerate launch."
        )
    checkpoint = resolve_checkpoint(training_args) if training_args.do_train else None
    set_seed(training_args.seed)
    hub_kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token}

    # Read and label. The main process prepares the Arrow caches; the others then read them.
    with training_args.main_process_first(desc="reading data"):
        raw, files = read_data(data_args, model_args)
        raw, label_list, scheme = prepare_tags(raw, files, data_args.label_list)
    raw, data_sizes = select_splits(raw, data_args, training_args)

    # Model and tokenizer.
    with training_args.main_process_first(desc="preparing the model"):
        source = prepare_model_source(
            model_args.model_name_or_path,
            config_name=model_args.config_name,
            tokenizer_name=model_args.tokenizer_name,
            cache_dir=model_args.cache_dir,
        )
    tokenizer = load_tokenizer(
        source.tokenizer,
        do_lower_case=model_args.do_lower_case,
        user_name=model_args.tokenizer_name or source.user_name,
        **hub_kwargs,
    )
    require_fast_tokenizer(tokenizer, source.tokenizer)
    head = given_head_settings(model_args, data_args)
    new_head, linear_because = RECIPE.new_head(head, label_all_tokens=data_args.label_all_tokens)
    if linear_because:
        logger.info("%s", linear_because)
    model = load_model(
        source.model,
        label_list,
        head=head,
        new_head=new_head,
        config_name=source.config,
        tag_scheme=scheme,
        new_classifier=model_args.new_classifier,
        **hub_kwargs,
    )
    check_vocabulary(tokenizer, model.config.vocab_size, source.tokenizer)
    label_list = [model.config.id2label[i] for i in range(model.config.num_labels)]
    id2label = dict(enumerate(label_list))
    scheme = model.config.tag_scheme
    check_predictable(raw, files, label_list, model_args.model_name_or_path)
    if data_args.label_all_tokens and model.config.use_crf:
        raise ValueError(
            "--label_all_tokens does not go with a CRF: the CRF scores one tag path per sentence, read at each "
            "word's first sub-token. Leave out --label_all_tokens (or --use_crf)."
        )
    rate = RECIPE.learning_rate(model.config)
    if training_args.do_train and not training_args.learning_rate_given and rate is not None:
        training_args.learning_rate = rate
        logger.info(
            "Learning rate %g: the default for an encoder up to %d wide (%d here; measured: %s); --learning_rate sets "
            "another.", rate, RECIPE.small_encoder_width, model.config.hidden_size, WHY,
        )
    max_seq_length = resolve_max_seq_length(data_args.max_seq_length, tokenizer, model.config)
    check_stride(data_args.stride, max_seq_length)

    with training_args.main_process_first(desc="tokenising"):
        tokenized = tokenize_splits(
            raw,
            tokenizer=tokenizer,
            label_list=label_list,
            max_seq_length=max_seq_length,
            stride=data_args.stride,
            context_size=model.config.context_size,
            label_all_tokens=data_args.label_all_tokens,
            files=files,
        )

    def metrics_for(split: str) -> WordLevelMetrics:
        return WordLevelMetrics(tokenized[split], raw[split]["tags"], id2label, scheme)

    push = training_args.push_to_hub  # pushed once at the end, with the model card (not the Trainer's pushes)
    training_args.push_to_hub = False
    # The Trainer pickles its arguments into training_args.bin (output folder and every checkpoint): keep the
    # token out of them.
    hub_token, training_args.hub_token = training_args.hub_token, None
    trainer = build_trainer(
        model,
        training_args,
        tokenizer,
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        eval_metrics=metrics_for("validation") if "validation" in tokenized else None,
    )
    trainer.add_callback(start_run(training_args, checkpoint))  # run id in run_id.txt and every checkpoint
    results: dict[str, float] = {}
    plots: list[str] = []
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = dict(train_result.metrics, train_samples=len(tokenized["train"]))
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    predictor = None  # tags the scored splits once more, with confidences (the main process only)
    if trainer.is_world_process_zero() and any(getattr(training_args, f"do_{split.prefix}") for split in SCORED_SPLITS):
        predictor = confidence_predictor(source.model, raw, files, data_args, training_args, max_seq_length)
    scored: list[SplitScores] = []
    for split in SCORED_SPLITS:
        if not getattr(training_args, f"do_{split.prefix}"):  # --do_eval, --do_predict
            continue
        metrics, predicted = evaluate_split(trainer, tokenized[split.name], metrics_for(split.name), split.prefix)
        metrics[split.key("samples")] = len(tokenized[split.name])
        confidence = None
        if predictor is not None:
            confidence = split_confidence(predictor, raw[split.name]["words"], raw[split.name]["tags"], raw[split.name]["doc_start"])
            metrics.update(confidence.metrics(split.prefix))
        trainer.log_metrics(split.prefix, metrics)
        trainer.save_metrics(split.prefix, metrics)
        results.update(metrics)
        scored.append(SplitScores.from_metrics(metrics, split))
        if trainer.is_world_process_zero():
            plots += write_split_outputs(
                training_args.output_dir,
                scored[-1],
                words=raw[split.name]["words"],
                gold=raw[split.name]["tags"],
                predicted=predicted,
                doc_start=raw[split.name]["doc_start"],
                scheme=scheme,
                confidence=confidence.figures() if confidence is not None else None,
            )
    if trainer.is_world_process_zero():
        card = CardData(
            base_model=model_args.model_name_or_path,
            label_list=label_list,
            scheme=scheme,
            trained=training_args.do_train,
            data_files={split: data_args.dataset_name or files[split] for split in raw},
            data_sizes=data_sizes,
            hyperparameters={
                **{  # the limits on the data, where given
                    f"max_{split.prefix}_samples": getattr(data_args, f"max_{split.prefix}_samples")
                    for split in SPLITS
                    if split.name in raw and getattr(data_args, f"max_{split.prefix}_samples") is not None
                },
                "max_seq_length": max_seq_length,
                "label_all_tokens": data_args.label_all_tokens,
                **head_hyperparameters(model.config),
            },
        )
        finish_output_dir(
            training_args.output_dir,
            card,
            Results(tuple(scored)),
            training_args=training_args,
            log_history=trainer.state.log_history,
            plots=plots,
            push=push,
            hub_token=hub_token,
            trained_for=(trainer.state.global_step, trainer.state.epoch) if training_args.do_train else (),
        )
        scores = ", ".join(f"{one.split.short} F1 {one.overall['f1']:.4f}" for one in scored)
        logger.info("Done%s. Outputs in %s", f": {scores}" if scores else "", os.path.abspath(training_args.output_dir))
    return results


if __name__ == "__main__":
    from ner.errors import run_cli

    sys.exit(run_cli(main))  # bad input: one `error: path:line: ...` line (--debug or NER_DEBUG=1: the traceback)
