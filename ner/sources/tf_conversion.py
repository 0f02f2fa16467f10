"""Google-BERT TensorFlow checkpoints (BERT, BioBERT, SciBERT) to a Hugging Face folder, without TensorFlow.

``RULES`` is the whole name mapping: one row per TF variable, giving the transformers
``BertForPreTraining`` name, the TF shape in terms of ``bert_config.json``, and whether the kernel is
transposed (TF dense kernels are [in, out], torch ``Linear`` weights [out, in]). Optimizer state
(``SKIPPED``) is skipped and counted; any other variable, or any ``BertForPreTraining`` weight left
without a value, stops the conversion with a list of them (``allow_missing`` for the deliberate case).
A fine-tuned checkpoint (Google's ``run_classifier``, BioBERT's ``run_ner``: an ``output_weights``/
``output_bias`` classifier and no ``cls/`` heads) needs no flag: it becomes a ``BertForTokenClassification``
folder that keeps its classifier, with label names from a label list file when given.
TF2 object-based checkpoints are converted when their variables keep Google's names.

The output folder (config.json, model.safetensors, tokenizer files, README.md) is built in a temporary
folder and renamed into place, so a failure leaves nothing behind. Tensors are streamed one at a time
from the checkpoint into model.safetensors, so memory stays near the largest tensor, not the model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import BertConfig, BertTokenizerFast

from ner.data.records import decode_utf8
from ner.errors import DataFileError
from ner.files import new_work_folder
from ner.sources.tf_checkpoint import OBJECT_GRAPH_KEY, TFCheckpoint, resolve_prefix
from ner.sources.tokenizer import name_says_case, vocabulary_casing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    tf_name: str  # {n}: the layer number
    hf_name: str
    shape: tuple[str | int, ...]  # TF shape; names are bert_config.json keys ("num_labels": the checkpoint's)
    transpose: bool = False
    group: str = "encoder"  # encoder, pooler, pretraining (MLM/NSP heads), classifier (optional)


_L, _H = "bert/encoder/layer_{n}/", "bert.encoder.layer.{n}."
H, I, V = "hidden_size", "intermediate_size", "vocab_size"
_T, _CLS = {"transpose": True}, {"group": "pretraining"}
RULES: tuple[Rule, ...] = (
    Rule("bert/embeddings/word_embeddings", "bert.embeddings.word_embeddings.weight", (V, H)),
    Rule("bert/embeddings/position_embeddings", "bert.embeddings.position_embeddings.weight",
         ("max_position_embeddings", H)),
    Rule("bert/embeddings/token_type_embeddings", "bert.embeddings.token_type_embeddings.weight",
         ("type_vocab_size", H)),
    Rule("bert/embeddings/LayerNorm/gamma", "bert.embeddings.LayerNorm.weight", (H,)),
    Rule("bert/embeddings/LayerNorm/beta", "bert.embeddings.LayerNorm.bias", (H,)),
    Rule(_L + "attention/self/query/kernel", _H + "attention.self.query.weight", (H, H), **_T),
    Rule(_L + "attention/self/query/bias", _H + "attention.self.query.bias", (H,)),
    Rule(_L + "attention/self/key/kernel", _H + "attention.self.key.weight", (H, H), **_T),
    Rule(_L + "attention/self/key/bias", _H + "attention.self.key.bias", (H,)),
    Rule(_L + "attention/self/value/kernel", _H + "attention.self.value.weight", (H, H), **_T),
    Rule(_L + "attention/self/value/bias", _H + "attention.self.value.bias", (H,)),
    Rule(_L + "attention/output/dense/kernel", _H + "attention.output.dense.weight", (H, H), **_T),
    Rule(_L + "attention/output/dense/bias", _H + "attention.output.dense.bias", (H,)),
    Rule(_L + "attention/output/LayerNorm/gamma", _H + "attention.output.LayerNorm.weight", (H,)),
    Rule(_L + "attention/output/LayerNorm/beta", _H + "attention.output.LayerNorm.bias", (H,)),
    Rule(_L + "intermediate/dense/kernel", _H + "intermediate.dense.weight", (H, I), **_T),
    Rule(_L + "intermediate/dense/bias", _H + "intermediate.dense.bias", (I,)),
    Rule(_L + "output/dense/kernel", _H + "output.dense.weight", (I, H), **_T),
    Rule(_L + "output/dense/bias", _H + "output.dense.bias", (H,)),
    Rule(_L + "output/LayerNorm/gamma", _H + "output.LayerNorm.weight", (H,)),
    Rule(_L + "output/LayerNorm/beta", _H + "output.LayerNorm.bias", (H,)),
    Rule("bert/pooler/dense/kernel", "bert.pooler.dense.weight", (H, H), transpose=True, group="pooler"),
    Rule("bert/pooler/dense/bias", "bert.pooler.dense.bias", (H,), group="pooler"),
    Rule("cls/predictions/transform/dense/kernel", "cls.predictions.transform.dense.weight", (H, H), **_T, **_CLS),
    Rule("cls/predictions/transform/dense/bias", "cls.predictions.transform.dense.bias", (H,), **_CLS),
    Rule("cls/predictions/transform/LayerNorm/gamma", "cls.predictions.transform.LayerNorm.weight", (H,), **_CLS),
    Rule("cls/predictions/transform/LayerNorm/beta", "cls.predictions.transform.LayerNorm.bias", (H,), **_CLS),
    # The MLM decoder's weight is tied to the word embeddings; its bias is stored as output_bias.
    Rule("cls/predictions/output_bias", "cls.predictions.bias", (V,), **_CLS),
    # modeling.py keeps these as [out, in] and multiplies with transpose_b: no transpose.
    Rule("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", (2, H), **_CLS),
    Rule("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", (2,), **_CLS),
    # A fine-tuned classifier (Google's run_classifier, BioBERT's run_ner): [num_labels, hidden], no transpose.
    Rule("output_weights", "classifier.weight", ("num_labels", H), group="classifier"),
    Rule("output_bias", "classifier.bias", ("num_labels",), group="classifier"),
)
REQUIRED_GROUPS = ("encoder", "pooler", "pretraining")  # what BertForPreTraining saves
FINETUNED_OPTIONAL = ("pooler", "pretraining")  # what a checkpoint with a classifier may lack (fine-tuning drops cls/)

# Not model weights: optimizer slots and counters, matched against the variable's name. Skipped and counted.
SKIPPED: tuple[tuple[str, str], ...] = (
    (r".+/adam_[mv]", "adam_m/adam_v (Google BERT's AdamWeightDecayOptimizer slots)"),
    (r".+/AdamWeightDecayOptimizer(_1)?", "AdamWeightDecayOptimizer(_1) slots"),
    (r".+/BERTAdam(_1)?", "BERTAdam(_1) slots (BioBERT v1.0)"),
    (r".+/LAMB(_1)?", "LAMB(_1) slots (NVIDIA)"),
    (r".+/Adam(_1)?", "Adam(_1) slots (tf.train.AdamOptimizer)"),
    (r"(.+/)?beta[12]_power", "beta1_power/beta2_power"),
    (r"(.+/)?global_step", "global_step"),
    (r"(.+/)?(current_loss_scale|good_steps)", "loss-scale state (mixed precision)"),
)
# TF2 object-based checkpoints: matched against the checkpoint key.
SKIPPED_TF2_KEYS: tuple[tuple[str, str], ...] = (
    (re.escape(OBJECT_GRAPH_KEY), "the TF2 object graph"),
    (r".*/\.OPTIMIZER_SLOT/.*", "optimizer slots (TF2)"),
    (r"optimizer/.*", "optimizer state (TF2)"),
    (r"save_counter/.*", "save_counter (TF2)"),
)
TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "F32", "float64": "F64"}  # bfloat16: widened
CONFIG_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
CONFIG_DEFAULTS = {"max_position_embeddings": 512, "type_vocab_size": 2}
_RULE_PATTERNS = [
    (re.compile(re.escape(rule.tf_name).replace(re.escape("{n}"), r"(?P<n>\d+)")), rule) for rule in RULES
]
_SKIP_PATTERNS = [(re.compile(pattern), what) for pattern, what in SKIPPED]
_SKIP_TF2_PATTERNS = [(re.compile(pattern), what) for pattern, what in SKIPPED_TF2_KEYS]


@dataclass
class Tensor:
    """One output tensor: where it is in the checkpoint and what it becomes."""

    hf_name: str
    key: str  # checkpoint key
    tf_name: str  # Google BERT name: the key, or a TF2 variable's own name
    rule: Rule
    shape: tuple[int, ...]  # output shape
    dtype: str  # safetensors dtype


@dataclass
class ConversionPlan:
    tensors: list[Tensor]
    skipped: Counter = field(default_factory=Counter)  # what -> count
    missing: list[tuple[str, str]] = field(default_factory=list)  # (TF name, HF name), allowed to be missing
    object_based: bool = False

    @property
    def groups(self) -> set[str]:
        return {tensor.rule.group for tensor in self.tensors}


@dataclass
class ConversionSummary:
    output_dir: Path
    source: Path
    config: Path
    vocab: Path
    tensors: int
    parameters: int
    skipped: Counter
    missing: list[tuple[str, str]]
    do_lower_case: bool
    lower_case_reason: str
    object_based: bool
    labels: list[str] | None = None  # the fine-tuned classifier's outputs, when the checkpoint has one
    seconds: float = 0.0


def read_bert_config(path: str | os.PathLike) -> dict:
    """bert_config.json as a dict (with BERT's defaults), checked for the keys the mapping needs."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{path}: no such file. A TensorFlow BERT release has a bert_config.json beside its checkpoint; "
            "pass it with --bert_config PATH."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        line = getattr(error, "lineno", None)
        raise DataFileError(path, line, f"not valid JSON ({error}); expected BERT's bert_config.json") from None
    if not isinstance(config, dict):
        raise DataFileError(path, None, f"expected a JSON object of BERT settings, found {type(config).__name__}")
    absent = [key for key in CONFIG_REQUIRED if not isinstance(config.get(key), int)]
    if absent:
        raise DataFileError(path, None, f"missing or non-integer {', '.join(absent)}; expected BERT's bert_config.json")
    return {**CONFIG_DEFAULTS, **config}


def _match_rule(name: str, num_layers: int) -> tuple[Rule, str] | None:
    for pattern, rule in _RULE_PATTERNS:
        match = pattern.fullmatch(name)
        if match and ("n" not in pattern.groupindex or int(match["n"]) < num_layers):
            return rule, rule.hf_name.format(n=match["n"] if "n" in pattern.groupindex else None)
    return None


def _skip_reason(name: str, patterns: list) -> str | None:
    return next((what for pattern, what in patterns if pattern.fullmatch(name)), None)


def plan_conversion(
    checkpoint: TFCheckpoint,
    config: dict,
    *,
    config_path: str | os.PathLike = "bert_config.json",
    allow_missing: bool | tuple[str, ...] = False,
) -> ConversionPlan:
    """Map every variable to a transformers name or a skip reason; check the names and shapes.

    ``allow_missing``: True lets any ``BertForPreTraining`` weight be absent; a tuple of groups only
    those (``("pooler", "pretraining")``). A checkpoint with a fine-tuned classifier may lack the pooler
    and the pre-training heads without it. Raises before anything is read if the checkpoint does not fit.
    """
    full_names = checkpoint.object_graph_names()
    object_based = bool(full_names) or any(key.endswith(TF2_SUFFIX) for key in checkpoint.entries)
    plan, unmapped, found = ConversionPlan([], object_based=object_based), [], {}
    for key, entry in checkpoint.entries.items():
        name = full_names.get(key, key)
        reason = (_skip_reason(key, _SKIP_TF2_PATTERNS) if object_based else None) or _skip_reason(name, _SKIP_PATTERNS)
        matched = None if reason else _match_rule(name, config["num_hidden_layers"])
        if reason:
            plan.skipped[reason] += 1
        elif matched is None:
            unmapped.append(f"  {key}{f' ({name})' if name != key else ''} {list(entry.shape)} {entry.dtype}")
        elif matched[1] in found:
            raise ValueError(f"{checkpoint.prefix}: both {found[matched[1]]} and {key} would become {matched[1]}.")
        elif entry.dtype not in SAFETENSORS_DTYPES:
            raise DataFileError(checkpoint.index_path, None, f"{key} is {entry.dtype}; BERT weights are floating point")
        else:
            rule, hf_name = matched
            found[hf_name] = key
            shape = entry.shape[::-1] if rule.transpose else entry.shape
            plan.tensors.append(Tensor(hf_name, key, name, rule, shape, SAFETENSORS_DTYPES[entry.dtype]))
    if unmapped:
        raise ValueError(_unmapped_message(checkpoint, unmapped, object_based))
    _check_shapes(checkpoint, plan, config, config_path)
    missing = [
        (rule.tf_name.format(n=n), rule.hf_name.format(n=n), rule.group)
        for rule in RULES
        if rule.group in REQUIRED_GROUPS
        for n in (range(config["num_hidden_layers"]) if "{n}" in rule.tf_name else [None])
        if rule.hf_name.format(n=n) not in found
    ]
    allowed = set(REQUIRED_GROUPS if allow_missing is True else allow_missing or ())
    if "classifier" in plan.groups:
        allowed.update(FINETUNED_OPTIONAL)
    refused = [(tf_name, hf_name) for tf_name, hf_name, group in missing if group not in allowed]
    if refused:
        raise ValueError(_missing_message(checkpoint, refused))
    plan.missing = [(tf_name, hf_name) for tf_name, hf_name, _ in missing]
    plan.tensors.sort(key=lambda t: (checkpoint.entries[t.key].shard, checkpoint.entries[t.key].offset))
    return plan


def _listed(lines: list[str], limit: int = 20) -> str:
    return "\n".join(lines[:limit]) + (f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else "")


def _unmapped_message(checkpoint: TFCheckpoint, unmapped: list[str], object_based: bool) -> str:
    if object_based:
        return (
            f"{checkpoint.prefix} is an object-based (TF2) checkpoint and {len(unmapped)} of its variables do not "
            f"carry Google BERT names:\n{_listed(unmapped)}\nTF Model Garden / Keras BERTs name and shape their "
            "weights differently (e.g. transformer/layer_0/self_attention/query/kernel as [hidden, heads, head_size]); "
            "this converter reads Google BERT's layout only. Export the model under Google BERT's variable names, or "
            "use the converter that came with that model. Nothing was written."
        )
    return (
        f"{checkpoint.prefix}: {len(unmapped)} variables are neither Google BERT weights (for the num_hidden_layers "
        f"of the config) nor known optimizer state:\n{_listed(unmapped)}\nIs this a BERT checkpoint, and is the "
        "bert_config.json its own? (`--list` shows every variable.) Nothing was written."
    )


def _missing_message(checkpoint: TFCheckpoint, missing: list[tuple[str, str]]) -> str:
    if all(hf_name.startswith(("cls.", "bert.pooler.")) for _, hf_name in missing):
        advice = (
            "The checkpoint has no pre-training heads (cls/...) and no fine-tuned classifier (output_weights, "
            "output_bias), so it holds only an encoder; pass --allow_missing to convert it without them "
            "(BertForPreTraining then initialises them at random; an NER model does not use them)."
        )
    else:
        advice = (
            "Is the bert_config.json (num_hidden_layers) this checkpoint's own? If the gaps are deliberate, pass "
            "--allow_missing (the weights are then initialised at random when loaded)."
        )
    shown = _listed([f"  {tf_name} (-> {hf_name})" for tf_name, hf_name in missing])
    return (
        f"{checkpoint.prefix}: {len(missing)} weights of BertForPreTraining are not in the checkpoint:\n{shown}\n"
        f"{advice} Nothing was written."
    )


def _check_shapes(checkpoint: TFCheckpoint, plan: ConversionPlan, config: dict, config_path: str | os.PathLike) -> None:
    classifier = [t for t in plan.tensors if t.rule.group == "classifier"]
    sizes = dict(config, num_labels=checkpoint.entries[classifier[0].key].shape[0] if classifier else 0)
    wrong = []
    for tensor in plan.tensors:
        expected = tuple(sizes[s] if isinstance(s, str) else s for s in tensor.rule.shape)
        stored = checkpoint.entries[tensor.key].shape
        if stored != expected:
            wrong.append(f"  {tensor.tf_name}: {list(stored)} in the checkpoint, {list(expected)} by the config")
    if wrong:
        raise ValueError(
            f"{config_path} does not describe {checkpoint.prefix}:\n{_listed(wrong)}\nPass the bert_config.json that "
            "came with this checkpoint (vocab_size, hidden_size, intermediate_size, max_position_embeddings and "
            "type_vocab_size must match). Nothing was written."
        )


def read_label_names(path: str | os.PathLike, num_labels: int) -> list[str]:
    """A label list file for a fine-tuned classifier: one name per output, in the classifier's order.

    Any names are accepted (fine-tuning scripts used ``B``, ``X``, ``[CLS]``...); blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise ValueError(f"--label_list {path}: {what}; give a file with one label per line.")
    labels: list[str] = []
    seen: dict[str, int] = {}
    text = decode_utf8(str(path), 1, path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    for number, line in enumerate(text.splitlines(), start=1):
        label = line.strip()
        if not label:
            continue
        if label in seen:
            raise DataFileError(path, number, f"label {label!r} repeats line {seen[label]}; list each label once")
        seen[label] = number
        labels.append(label)
    if len(labels) != num_labels:
        raise DataFileError(
            path, None,
            f"{len(labels)} labels, but the checkpoint's classifier (output_weights) has {num_labels} outputs; "
            "list one label per output, in the order the fine-tuning script numbered them (an id it left unused "
            "still needs a line, e.g. [PAD]). Nothing was written",
        )
    return labels


def classifier_size(plan: ConversionPlan) -> int | None:
    """The number of outputs of the fine-tuned classifier the plan holds, or None."""
    return next((tensor.shape[0] for tensor in plan.tensors if tensor.hf_name == "classifier.bias"), None)


# --- the tokenizer -------------------------------------------------------------------------------

def read_vocab(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; pass the release's vocab.txt with --vocab PATH.")
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataFileError(path, None, f"not UTF-8 ({error}); expected a WordPiece vocab.txt") from None
    if "[UNK]" not in tokens:
        raise DataFileError(path, None, f"no [UNK] among its {len(tokens)} lines; expected a BERT WordPiece vocab.txt")
    repeated = len(tokens) - len(set(tokens))
    if repeated:
        logger.warning("%s: %d tokens appear twice; the tokenizer keeps the later id of each.", path, repeated)
    return tokens


def guess_lower_case(tokens: list[str], names: list[str]) -> tuple[bool, str]:
    """Lowercase unless the vocabulary is cased or a folder name says "cased" (the rule of ``ner.sources.tokenizer``)."""
    cased_vocab, share = vocabulary_casing(tokens)
    named = name_says_case(names)
    vocab_says = f"{100 * share:.1f}% of the vocabulary's word pieces are capitalised"
    if not cased_vocab and named != "cased":
        return True, vocab_says + (" and the folder name says uncased" if named == "uncased" else "")
    if named is not None and (named == "cased") != cased_vocab:
        logger.warning("The folder name says %s, but %s; keeping case. --do_lower_case overrides.", named, vocab_says)
    return False, vocab_says if cased_vocab else "the folder name says cased"


def write_tokenizer(folder: Path, tokens: list[str], *, lower_case: bool, max_length: int) -> None:
    """vocab.txt, tokenizer_config.json and tokenizer.json, as BertTokenizerFast saves them."""

    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    settings = {"do_lower_case": lower_case, "tokenizer_class": "BertTokenizer", "model_max_length": max_length}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    BertTokenizerFast.from_pretrained(str(folder)).save_pretrained(str(folder))


# --- the output folder ---------------------------------------------------------------------------

def write_safetensors(path: Path, checkpoint: TFCheckpoint, tensors: list[Tensor], *, progress: bool = False) -> None:
    """Stream ``tensors`` from the checkpoint into a safetensors file, one tensor in memory at a time."""

    itemsize = {"F32": 4, "F16": 2, "F64": 8}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for tensor in tensors:
        end = offset + int(np.prod(tensor.shape)) * itemsize[tensor.dtype]
        header[tensor.hf_name] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, end]}
        offset = end
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the tensor data starts 8-byte aligned
    quiet = not progress or offset < 50_000_000
    bar = tqdm(total=offset, unit="B", unit_scale=True, desc="Converting", disable=quiet)
    with open(path, "wb") as stream, bar:
        stream.write(len(encoded).to_bytes(8, "little") + encoded)
        for tensor in tensors:
            array = checkpoint.read(tensor.key)
            array = np.ascontiguousarray(array.T if tensor.rule.transpose else array)
            stream.write(memoryview(array).cast("B"))
            bar.update(array.nbytes)
            del array  # before the next tensor is read
        stream.flush()
        os.fsync(stream.fileno())


def _write_config(folder: Path, config: dict, plan: ConversionPlan, labels: list[str] | None = None) -> None:
    """config.json: a token classifier when the checkpoint has a fine-tuned classifier, else BERT itself."""

    ignored = ("model_type", "architectures", "num_labels", "id2label", "label2id")
    settings = {key: value for key, value in config.items() if key not in ignored}
    num_labels = classifier_size(plan)
    if num_labels is not None:
        labels = labels or [f"LABEL_{i}" for i in range(num_labels)]
        settings.update(
            architectures=["BertForTokenClassification"],
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    else:
        settings["architectures"] = ["BertForPreTraining"] if "pretraining" in plan.groups else ["BertModel"]
    BertConfig(**settings).save_pretrained(str(folder))


def _write_readme(folder: Path, summary: ConversionSummary) -> None:
    skipped = "; ".join(f"{count} {what}" for what, count in summary.skipped.items()) or "none"
    missing = ", ".join(hf_name for _, hf_name in summary.missing) or "none"
    if summary.labels:
        loading = [
            f"A token classifier ({len(summary.labels)} labels: {' '.join(summary.labels)}), from the fine-tuned",
            "`output_weights`/`output_bias`: load it with `BertForTokenClassification.from_pretrained(folder)`, or",
            "predict with `python run_ner.py --model_name_or_path <this folder> --do_predict ...`. (A `run_classifier`",
            "checkpoint classified sentences: load that one with `BertForSequenceClassification`, same weights.)",
        ]
    else:
        loading = [
            "Load it with `BertForPreTraining.from_pretrained(folder)` (or any BERT class), or fine-tune it for NER",
            "with `python run_ner.py --model_name_or_path <this folder> ...`.",
        ]
    lines = [
        f"# {summary.output_dir.name}",
        "",
        f"Converted from the TensorFlow checkpoint `{summary.source}` by `convert_tf_to_pytorch.py` (no TensorFlow).",
        "",
        f"- config: `{summary.config}` -> `config.json`",
        f"- weights: {summary.tensors} tensors, {summary.parameters:,} parameters -> `model.safetensors`"
        + (" (from an object-based TF2 checkpoint)" if summary.object_based else ""),
        f"- skipped (not model weights): {skipped}",
        f"- not in the checkpoint (a fine-tuned model does not use them): {missing}" if summary.labels
        else f"- missing (initialised at random when loaded): {missing}",
        f"- vocabulary: `{summary.vocab}`; do_lower_case={str(summary.do_lower_case).lower()} "
        f"({summary.lower_case_reason})",
        "",
        *loading,
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _write_model(folder: Path, checkpoint: TFCheckpoint, plan: ConversionPlan, config: dict, tokens: list[str] | None,
                 lower_case: bool, *, progress: bool, labels: list[str] | None = None) -> None:
    write_safetensors(folder / "model.safetensors", checkpoint, plan.tensors, progress=progress)
    _write_config(folder, config, plan, labels)
    if tokens is not None:
        write_tokenizer(folder, tokens, lower_case=lower_case, max_length=config["max_position_embeddings"])


def _replace_folder(work: Path, target: Path) -> None:
    """Move the finished ``work`` folder to ``target``, replacing what is there only at the last moment."""
    old = None
    if target.exists():
        old = new_work_folder(target.parent, f"{target.name}.old")
        os.replace(target, old / target.name)
    os.replace(work, target)
    if old is not None:
        shutil.rmtree(old)


def convert_tf_checkpoint(
    tf_checkpoint: str | os.PathLike,
    bert_config: str | os.PathLike,
    vocab: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    do_lower_case: bool | None = None,
    label_list: str | os.PathLike | None = None,
    allow_missing: bool = False,
    overwrite: bool = False,
    verify_checksums: bool = True,
    progress: bool = False,
) -> ConversionSummary:
    """Convert a Google-BERT TF checkpoint (given by its prefix) into a Hugging Face folder, atomically.

    Names, shapes and the vocabulary are checked before anything is written; a failure while writing
    (e.g. a CRC error) removes the temporary folder and leaves ``output_dir`` as it was. ``label_list``:
    a file naming the fine-tuned classifier's outputs, one per line (default ``LABEL_0``...).
    """
    started = time.perf_counter()
    output_dir, prefix = Path(output_dir), resolve_prefix(tf_checkpoint)
    config, tokens = read_bert_config(bert_config), read_vocab(vocab)
    if len(tokens) > config["vocab_size"]:
        raise ValueError(
            f"{vocab} has {len(tokens)} tokens but {bert_config} says vocab_size {config['vocab_size']}: token ids "
            "past the embedding matrix would crash. Pass the vocab.txt that came with this checkpoint."
        )
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"{output_dir} exists and is not empty; choose another --output_dir or pass --overwrite_output_dir."
        )
    if do_lower_case is None:
        lower, reason = guess_lower_case(tokens, [Path(vocab).resolve().parent.name, prefix.resolve().parent.name])
    else:
        lower, reason = do_lower_case, "set by --do_lower_case"
    with TFCheckpoint(prefix, verify_checksums=verify_checksums) as checkpoint:
        plan = plan_conversion(checkpoint, config, config_path=bert_config, allow_missing=allow_missing)
        num_labels = classifier_size(plan)
        if label_list is not None and num_labels is None:
            raise ValueError(
                f"--label_list {label_list}: {prefix} has no fine-tuned classifier (output_weights, output_bias) to "
                "name the outputs of; leave out --label_list. Nothing was written."
            )
        labels = read_label_names(label_list, num_labels) if label_list is not None else None
        if num_labels is not None:
            labels = labels or [f"LABEL_{i}" for i in range(num_labels)]
        parameters = sum(int(np.prod(tensor.shape)) for tensor in plan.tensors)
        summary = ConversionSummary(
            output_dir, prefix, Path(bert_config), Path(vocab), len(plan.tensors), parameters, plan.skipped,
            plan.missing, lower, reason, plan.object_based, labels=labels,
        )
        work = new_work_folder(output_dir.parent, output_dir.name)
        try:
            _write_model(work, checkpoint, plan, config, tokens, lower, progress=progress, labels=labels)
            _write_readme(work, summary)
            _replace_folder(work, output_dir)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    summary.seconds = time.perf_counter() - started
    logger.info(
        "Converted %s: %d tensors (%s parameters); skipped %s; do_lower_case=%s (%s)%s -> %s",
        prefix, summary.tensors, f"{parameters:,}", dict(summary.skipped) or "nothing", lower, reason,
        f"; a token classifier over {' '.join(labels)}" if labels else "", output_dir,
    )
    return summary


def convert_for_loading(prefix: Path, config: Path | None, vocab: Path | None, work: Path) -> None:
    """Write config.json, model.safetensors and the tokenizer into the existing folder ``work``.

    For ``ner.sources.staging``: the encoder must be complete; missing pooler/pre-training heads are fine (an NER
    model does not use them). A fine-tuned classifier is kept, as by ``convert_tf_checkpoint`` (labels
    ``LABEL_0``...), so that ``run_ner.py`` can predict with it.
    """
    if config is None:
        raise ValueError(f"No bert_config.json beside {prefix}; pass --config_name path/bert_config.json.")
    settings = read_bert_config(config)
    tokens = read_vocab(vocab) if vocab is not None and vocab.suffix == ".txt" else None
    with TFCheckpoint(prefix) as checkpoint:
        plan = plan_conversion(checkpoint, settings, config_path=config, allow_missing=("pooler", "pretraining"))
        num_labels = classifier_size(plan)
        if num_labels is not None:
            logger.info("%s: kept its fine-tuned classifier (%d outputs, named LABEL_0...).", prefix, num_labels)
        lower = guess_lower_case(tokens, [vocab.resolve().parent.name])[0] if tokens is not None else True
        _write_model(work, checkpoint, plan, settings, tokens, lower, progress=False)
    if vocab is not None and tokens is None:
        shutil.copy(vocab, work / vocab.name)  # tokenizer.json or a SentencePiece model: used as is
