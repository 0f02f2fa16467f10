"""From sub-token predictions to word-level tags, and the conlleval-readable predictions file."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ner.conll import DOCSTART
from ner.files import atomic_writer
from ner.schemes import OUTSIDE


def word_tags(
    predicted_ids: np.ndarray,
    sentence_index: Sequence[int],
    word_positions: Sequence[Sequence[int]],
    word_margins: Sequence[Sequence[int]],
    id2label: dict[int, str],
    sentences: int,
) -> list[list[str]]:
    """Each word's tag, read at its first sub-token in the window where it sits farthest from an edge.

    Rows of ``predicted_ids`` are examples (windows) as built by ``ner.alignment.encode_sentences``; a word
    placed in no window (no sub-token) gets ``O``. Returns one tag list per sentence, every word tagged.
    """
    tags: list[list[str] | None] = [None] * sentences
    best: list[list[int] | None] = [None] * sentences
    for row, sentence in enumerate(sentence_index):
        positions, margins = word_positions[row], word_margins[row]
        if tags[sentence] is None:
            tags[sentence] = [OUTSIDE] * len(positions)
            best[sentence] = [-1] * len(positions)
        sentence_tags, sentence_best, predicted = tags[sentence], best[sentence], predicted_ids[row]
        for word, (position, margin) in enumerate(zip(positions, margins)):
            if position >= 0 and margin > sentence_best[word]:
                sentence_best[word] = margin
                sentence_tags[word] = id2label[int(predicted[position])]
    missing = [i for i, sentence_tags in enumerate(tags) if sentence_tags is None]
    if missing:
        raise ValueError(f"No prediction for sentences {missing[:5]}: the examples do not cover the input.")
    return tags


def write_predictions(
    path: str | os.PathLike,
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    doc_start: Sequence[bool],
) -> None:
    """``word<TAB>gold<TAB>predicted`` per word, a blank line after each sentence, ``-DOCSTART-`` kept."""
    with atomic_writer(path) as out:
        for sentence_words, sentence_gold, sentence_predicted, starts_document in zip(words, gold, predicted, doc_start):
            if starts_document:
                out.write(f"{DOCSTART}\t{OUTSIDE}\t{OUTSIDE}\n\n")
            for word, gold_tag, predicted_tag in zip(sentence_words, sentence_gold, sentence_predicted, strict=True):
                out.write(f"{word}\t{gold_tag}\t{predicted_tag}\n")
            out.write("\n")
