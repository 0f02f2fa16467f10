"""Word-level tags -> sub-token labels, with ``word_ids()`` from a fast tokenizer.

The first sub-token of each word carries the word's label; the others get ``IGNORE_INDEX`` (or,
with ``label_all_tokens``, the word's label with ``B-`` turned into ``I-``). Special tokens and
padding always get ``IGNORE_INDEX``. ``word_positions`` keeps, for every word that fits, the index of
its first sub-token, which is where its prediction is read from, or -1 for a word that has no
sub-token (cut off by ``max_seq_length``, or made only of characters the tokenizer drops, such as
U+200B); such words are predicted ``O``.
"""

from __future__ import annotations

import logging
from typing import Any

from ner.modeling import IGNORE_INDEX
from ner.schemes import join_tag, split_tag

logger = logging.getLogger(__name__)


def require_fast_tokenizer(tokenizer: Any, name: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"The tokenizer of {name} is a slow (Python) tokenizer; label alignment needs a fast one "
            "(word_ids()). Install `tokenizers`, and give a folder with tokenizer.json or vocab.txt "
            "(BertTokenizerFast builds from vocab.txt)."
        )


def continuation_labels(label_list: list[str]) -> list[int]:
    """Label id for the non-first sub-tokens of a word, by the word's label id (B-X -> I-X)."""
    index = {label: i for i, label in enumerate(label_list)}
    result = []
    for i, label in enumerate(label_list):
        prefix, entity_type = split_tag(label)
        result.append(index.get(join_tag("I", entity_type), i) if prefix == "B" else i)
    return result


def align_batch(
    batch: dict[str, list],
    *,
    tokenizer: Any,
    label2id: dict[str, int],
    max_seq_length: int,
    label_all_tokens: bool = False,
    continuation: list[int] | None = None,
) -> dict[str, list]:
    """Tokenise a batch of ``words``/``tags`` rows; for ``datasets.map(batched=True)``."""
    encoded = tokenizer(batch["words"], is_split_into_words=True, truncation=True, max_length=max_seq_length)
    all_labels, all_positions, all_truncated = [], [], []
    for row, tags in enumerate(batch["tags"]):
        labels, positions = [], [-1] * len(tags)
        previous = None
        for position, word in enumerate(encoded.word_ids(row)):
            if word is None:
                labels.append(IGNORE_INDEX)
            elif word != previous:
                labels.append(label2id[tags[word]])
                positions[word] = position
            elif label_all_tokens:
                labels.append(continuation[label2id[tags[word]]])
            else:
                labels.append(IGNORE_INDEX)
            previous = word
        all_labels.append(labels)
        all_positions.append(positions)
        last = max((word for word, position in enumerate(positions) if position >= 0), default=-1)
        all_truncated.append(len(tags) - 1 - last if len(encoded["input_ids"][row]) >= max_seq_length else 0)
    encoded["labels"] = all_labels
    encoded["word_positions"] = all_positions
    encoded["truncated_words"] = all_truncated
    return dict(encoded)


def tokenize_splits(
    raw,
    *,
    tokenizer: Any,
    label_list: list[str],
    max_seq_length: int,
    label_all_tokens: bool = False,
    files: dict[str, str] | None = None,
    num_proc: int | None = None,
):
    """Tokenise every split of a DatasetDict; warn with the count of words cut by ``max_seq_length``."""
    label2id = {label: i for i, label in enumerate(label_list)}
    kwargs = dict(
        tokenizer=tokenizer,
        label2id=label2id,
        max_seq_length=max_seq_length,
        label_all_tokens=label_all_tokens,
        continuation=continuation_labels(label_list),
    )
    tokenized = raw.map(
        align_batch,
        fn_kwargs=kwargs,
        batched=True,
        remove_columns=["words", "tags"],
        num_proc=num_proc,
        desc="Tokenising and aligning labels",
    )
    for split, dataset in tokenized.items():
        empty = sum(positions.count(-1) for positions in dataset["word_positions"]) - sum(dataset["truncated_words"])
        if empty:
            logger.warning(
                "%s: %d words give no sub-token (only characters the tokenizer drops); they get no loss and "
                "are predicted as O.",
                (files or {}).get(split, split),
                empty,
            )
        truncated = dataset["truncated_words"]
        cut = [(count, line) for count, line in zip(truncated, dataset["line"]) if count]
        if cut:
            where = (files or {}).get(split, split)
            examples = ", ".join(f"{where}:{line} ({count} words)" for count, line in cut[:3])
            logger.warning(
                "%s: %d sentences are longer than max_seq_length=%d sub-tokens; %d words are cut off, get no "
                "loss, and are predicted as O (e.g. %s). Raise --max_seq_length (at most the model's 512).",
                where,
                len(cut),
                max_seq_length,
                sum(count for count, _ in cut),
                examples,
            )
    return tokenized
