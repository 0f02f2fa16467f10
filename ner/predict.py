"""From sub-token predictions to word-level tags, and the conlleval-readable predictions file."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ner.conll import DOCSTART
from ner.files import atomic_writer
from ner.schemes import OUTSIDE


def word_tags(
    predicted_ids: np.ndarray, word_positions: Sequence[Sequence[int]], id2label: dict[int, str]
) -> list[list[str]]:
    """Read each word's tag at its first sub-token; a word with no sub-token (position -1) gets ``O``."""
    sentences = []
    for row, positions in zip(predicted_ids, word_positions):
        sentences.append([id2label[int(row[p])] if p >= 0 else OUTSIDE for p in positions])
    return sentences


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
