"""Sentences -> model inputs (sub-token labels, sliding windows, document context), and window predictions back to words.

Each sentence is tokenised word by word (``word_ids()`` from a fast tokenizer). The first sub-token
of each word carries the word's label; the others get ``IGNORE_INDEX`` (or, with ``label_all_tokens``,
training data only, the word's type as ``I-TYPE``: inside an entity, never opening one); special
tokens, context and padding always get ``IGNORE_INDEX``. Evaluation data is always labelled at first
sub-tokens only, so that decoding (argmax, constrained, CRF) reads exactly one position per word, as the
predictor does.

Nothing is truncated. A sentence longer than ``max_seq_length - 2`` sub-tokens is cut into
overlapping windows (``stride`` sub-tokens shared by neighbours); every word starts in at least one
window, and at prediction a word takes its label from the window where it sits farthest from an edge
(``word_sources``, then ``word_tags``). A sentence that fits may be surrounded by up to ``context_size``
sub-tokens of the neighbouring sentences of its document on each side (never across a ``-DOCSTART-``),
which the model sees but is not trained or scored on. ``max_seq_length`` follows one rule for training
and prediction alike (``resolve_max_seq_length``).

Per example (window) the columns are ``input_ids``, ``attention_mask``, ``token_type_ids``,
``labels`` (when tags are given), ``sentence_index`` (row of the sentence in the batch), and for the
words whose first sub-token the window holds -- words ``first_word``, ``first_word + 1``, ... of the
sentence -- ``word_positions`` (index of that sub-token in this example) and ``word_margins`` (its
distance from the nearest window edge), so the window data grows with the window, not with the
sentence; and ``opens_sentence`` / ``closes_sentence``: whether the window holds the sentence's first /
last sub-token (the CRF applies its sentence-start and -end scores only there). A word with no sub-token
at all (only characters the tokenizer drops, such as U+200B) is in no window (-1 in the lists of a
window that holds words on both sides of it) and is predicted ``O``.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from itertools import count
from typing import Any

from ner.data.schemes import IGNORE_INDEX, OUTSIDE, continuation_labels

logger = logging.getLogger(__name__)

NO_POSITION = -1
DEFAULT_MAX_SEQ_LENGTH = 512  # the default window when the model takes more (attention cost grows with its square)


def require_fast_tokenizer(tokenizer: Any, name: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"The tokenizer of {name} is a slow (Python) tokenizer; label alignment needs a fast one "
            "(word_ids()). Install `tokenizers`, and give a folder with tokenizer.json or vocab.txt "
            "(BertTokenizerFast builds from vocab.txt)."
        )


def resolve_max_seq_length(requested: int | None, tokenizer: Any, config: Any) -> int:
    """Sub-tokens per window ([CLS]/[SEP] included), the same for training and prediction.

    ``requested`` when given (None: not given), else the model's limit capped at
    ``DEFAULT_MAX_SEQ_LENGTH``. The limit is the smaller of the tokenizer's ``model_max_length`` and the
    config's ``max_position_embeddings``; a longer window would index positions the model has no
    embedding for, so it is refused rather than cut down silently.
    """
    limit = min(tokenizer.model_max_length, config.max_position_embeddings)
    if requested is None:
        return min(limit, DEFAULT_MAX_SEQ_LENGTH)
    if requested > limit:
        raise ValueError(
            f"max_seq_length {requested} is over the model's limit of {limit} positions (the smaller of the "
            f"tokenizer's model_max_length and the config's max_position_embeddings); give at most {limit}, or "
            f"leave it out for {min(limit, DEFAULT_MAX_SEQ_LENGTH)}."
        )
    if requested < 3:
        raise ValueError(
            f"max_seq_length {requested} leaves no room for a sub-token beside [CLS] and [SEP]; give at least 3, or "
            f"leave it out for {min(limit, DEFAULT_MAX_SEQ_LENGTH)}."
        )
    return requested


def check_window_options(max_seq_length: int | None, stride: int | None) -> None:
    """What an entry point can refuse of ``--max_seq_length`` and ``--stride`` before the model loads (the model's
    limit is checked by ``resolve_max_seq_length``, the stride against the window by ``check_stride``)."""
    if max_seq_length is not None and max_seq_length < 3:
        raise ValueError(
            f"--max_seq_length {max_seq_length} leaves no room for a sub-token beside [CLS] and [SEP]; give at least "
            "3, or leave it out for the model's limit."
        )
    if stride is not None and stride < 0:
        raise ValueError(f"--stride must be 0 or more, got {stride}.")


def check_stride(stride: int | None, max_seq_length: int) -> None:
    """Refuse a ``stride`` that windows of ``max_seq_length`` sub-tokens cannot have: neighbours share 0 to
    ``max_seq_length - 3`` of their sub-tokens ([CLS] and [SEP] aside, each window moves on by at least one)."""
    budget = max_seq_length - 2
    if stride is not None and not 0 <= stride < budget:
        raise ValueError(
            f"stride {stride} does not fit windows of {max_seq_length} sub-tokens ({budget} beside [CLS] and [SEP]): "
            f"give 0 to {budget - 1}, or leave it out for {budget // 4}."
        )


def plan_windows(length: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` spans of at most ``budget`` pieces covering ``range(length)``, neighbours sharing ``stride``."""
    if length <= budget:
        return [(0, length)]
    if not 0 <= stride < budget:
        raise ValueError(f"stride must be in [0, {budget}) for windows of {budget} sub-tokens, got {stride}.")
    windows, start = [], 0
    while True:
        end = min(start + budget, length)
        windows.append((start, end))
        if end == length:
            return windows
        start = end - stride


def _context(pieces: list[list[int]], documents: Sequence[int], row: int, size: int, step: int) -> list[int]:
    """Up to ``size`` sub-tokens of the sentences before (step -1) or after (step 1) ``row``, same document."""
    taken: list[int] = []
    other = row + step
    while len(taken) < size and 0 <= other < len(pieces) and documents[other] == documents[row]:
        need = size - len(taken)
        taken = pieces[other][-need:] + taken if step < 0 else taken + pieces[other][:need]
        other += step
    return taken


def encode_sentences(
    words: Sequence[Sequence[str]],
    *,
    tokenizer: Any,
    max_seq_length: int,
    stride: int | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    label2id: dict[str, int] | None = None,
    label_all_tokens: bool = False,
    continuation: list[int] | None = None,
    documents: Sequence[int] | None = None,
    context_size: int = 0,
) -> dict[str, list]:
    """Model inputs for a batch of sentences (one example per window); see the module docstring."""
    budget = max_seq_length - 2  # [CLS] and [SEP]
    stride = budget // 4 if stride is None else stride
    encoded = tokenizer([list(w) for w in words], is_split_into_words=True, add_special_tokens=False, verbose=False)
    pieces = [list(ids) for ids in encoded["input_ids"]]
    columns: dict[str, list] = {
        key: []
        for key in (
            "input_ids", "attention_mask", "token_type_ids", "sentence_index", "first_word", "word_positions",
            "word_margins", "opens_sentence", "closes_sentence",
        )
    }
    # A tag outside the label list (a fine-tuned model reused on data with other types; training data is
    # checked before, see ner.data.schemes.check_predictable) is encoded as O: its word is still decoded, and
    # the score counts it as missed from the gold tags.
    fallback = label2id.get(OUTSIDE, IGNORE_INDEX) if label2id is not None else IGNORE_INDEX
    if tags is not None:
        columns["labels"] = []
    # Read once: each read of a special token's id is a vocabulary lookup in transformers 5 (~35 us).
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    for row, sentence_words in enumerate(words):
        word_of_piece = encoded.word_ids(row)
        first = [NO_POSITION] * len(sentence_words)
        for index, word in enumerate(word_of_piece):
            if word is not None and first[word] == NO_POSITION:
                first[word] = index
        piece_labels = None
        if tags is not None:
            word_labels = [label2id.get(tag, fallback) for tag in tags[row]]
            piece_labels = [
                word_labels[word]
                if first[word] == index
                else (continuation[word_labels[word]] if label_all_tokens and word_labels[word] >= 0 else IGNORE_INDEX)
                for index, word in enumerate(word_of_piece)
            ]
        # Words with a sub-token, in sentence order (so their first pieces ascend): a window holds a run of them.
        placed = [word for word, position in enumerate(first) if position != NO_POSITION]
        placed_at = [first[word] for word in placed]
        windows = plan_windows(len(pieces[row]), budget, stride)
        for start, end in windows:
            left = right = []
            if context_size and documents is not None and len(windows) == 1:
                room = budget - (end - start)
                left = _context(pieces, documents, row, min(context_size, room // 2), -1)
                right = _context(pieces, documents, row, min(context_size, room - len(left)), 1)
            offset = 1 + len(left) - start  # example position of sentence piece i is i + offset
            ids = [cls_id] + left + pieces[row][start:end] + right + [sep_id]
            columns["input_ids"].append(ids)
            columns["attention_mask"].append([1] * len(ids))
            columns["token_type_ids"].append([0] * len(ids))
            columns["sentence_index"].append(row)
            columns["opens_sentence"].append(start == 0)
            columns["closes_sentence"].append(end == len(pieces[row]))
            low, high = bisect_left(placed_at, start), bisect_left(placed_at, end)
            held = first[placed[low] : placed[high - 1] + 1] if low < high else []
            columns["first_word"].append(placed[low] if low < high else 0)
            columns["word_positions"].append([p + offset if p != NO_POSITION else NO_POSITION for p in held])
            columns["word_margins"].append([min(p - start, end - 1 - p) if p != NO_POSITION else NO_POSITION for p in held])
            if piece_labels is not None:
                context = [IGNORE_INDEX] * len(left), [IGNORE_INDEX] * len(right)
                columns["labels"].append([IGNORE_INDEX] + context[0] + piece_labels[start:end] + context[1] + [IGNORE_INDEX])
    return columns


def tokenize_splits(
    raw,
    *,
    tokenizer: Any,
    label_list: list[str],
    max_seq_length: int,
    stride: int | None = None,
    context_size: int = 0,
    label_all_tokens: bool = False,
    files: dict[str, str] | None = None,
):
    """Encode every split of a DatasetDict (whole split per batch, so context can reach neighbours).

    ``label_all_tokens`` applies to the ``train`` split only (see the module docstring).
    """
    label2id = {label: i for i, label in enumerate(label_list)}
    continuation = continuation_labels(label_list)
    tokenized = {}
    for split, dataset in raw.items():
        where = (files or {}).get(split, split)
        use_context = context_size
        if context_size and not any(dataset["doc_start"]):
            logger.warning("%s has no -DOCSTART- document boundaries; sentences are encoded without context.", where)
            use_context = 0

        def encode(batch: dict[str, list]) -> dict[str, list]:
            return encode_sentences(
                batch["words"],
                tokenizer=tokenizer,
                max_seq_length=max_seq_length,
                stride=stride,
                tags=batch["tags"],
                label2id=label2id,
                label_all_tokens=label_all_tokens and split == "train",
                continuation=continuation,
                documents=batch["document_id"],
                context_size=use_context,
            )

        tokenized[split] = dataset.map(
            encode, batched=True, batch_size=None, remove_columns=dataset.column_names, desc=f"Tokenising {split}"
        )
        report_coverage(tokenized[split], [len(words) for words in dataset["words"]], where, max_seq_length)
    return raw.__class__(tokenized)


def report_coverage(examples: Any, lengths: Sequence[int], where: str, max_seq_length: int) -> None:
    """Log how many sentences needed windows, and warn about words that got no sub-token.

    ``lengths``: words per sentence, in the order of ``sentence_index``.
    """
    windows_per_sentence = [n for n in Counter(examples["sentence_index"]).values() if n > 1]
    if windows_per_sentence:
        logger.info(
            "%s: %d sentences are longer than max_seq_length=%d sub-tokens; encoded as %d overlapping windows "
            "(no word is dropped).",
            where, len(windows_per_sentence), max_seq_length, sum(windows_per_sentence),
        )
    empty = sum(source is None for sentence in word_sources(examples, lengths) for source in sentence)
    if empty:
        logger.warning(
            "%s: %d words give no sub-token (only characters the tokenizer drops); they get no loss and are "
            "predicted as O.",
            where, empty,
        )


def word_sources(examples: Any, lengths: Sequence[int]) -> list[list[tuple[int, int] | None]]:
    """Where each word's prediction is read: ``(example row, position)`` of its first sub-token in the window
    where it sits farthest from an edge, or None for a word with no sub-token (it is predicted ``O``).

    ``examples`` are the columns of ``encode_sentences`` for sentences of ``lengths`` words (a dict of
    lists or a ``datasets.Dataset``); rows are in that order, as the predictions read with the result are.
    """
    sources: list[list[tuple[int, int] | None]] = [[None] * n for n in lengths]
    best = [[NO_POSITION] * n for n in lengths]
    covered = [False] * len(lengths)
    columns = (examples[name] for name in ("sentence_index", "first_word", "word_positions", "word_margins"))
    for row, (sentence, first_word, positions, margins) in enumerate(zip(*columns)):
        covered[sentence] = True
        sentence_sources, sentence_best = sources[sentence], best[sentence]
        for word, position, margin in zip(count(first_word), positions, margins):
            if position != NO_POSITION and margin > sentence_best[word]:
                sentence_best[word] = margin
                sentence_sources[word] = (row, position)
    missing = [i for i, seen in enumerate(covered) if not seen]
    if missing:
        raise ValueError(f"No prediction for sentences {missing[:5]}: the examples do not cover the input.")
    return sources


def word_tags(
    predicted_ids: Sequence[Sequence[int]], sources: Sequence[Sequence[tuple[int, int] | None]], id2label: dict[int, str]
) -> list[list[str]]:
    """Each word's tag: the label id predicted at its ``word_sources`` position; ``O`` for a word with none.

    ``predicted_ids`` (a list of rows or an array) is indexed ``[example row][position]``.
    """
    return [
        [OUTSIDE if source is None else id2label[int(predicted_ids[source[0]][source[1]])] for source in sentence]
        for sentence in sources
    ]
