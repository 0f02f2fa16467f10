"""A fast tokenizer that also marks word starts: what ``pipeline()`` needs to run a CRF from a model folder.

A CRF (or constrained decoding) reads one position per word, the word's first sub-token. ``pipeline()`` hands the
model only what the tokenizer returns, so this tokenizer adds ``word_starts`` (True at each word's first
sub-token) to every encoding it makes. Words are the ones given (``is_split_into_words=True``) or, for raw text,
the tokenizer's own pre-tokenized words. Copied into model folders beside ``ner.model.modeling`` and named in
tokenizer_config.json's ``auto_map``; used with ``trust_remote_code=True`` only (this package's own prediction
passes the word starts itself).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerFast


class NerTokenizerFast(PreTrainedTokenizerFast):
    """The folder's fast tokenizer (its ``tokenizer.json``: WordPiece or SentencePiece alike) whose encodings also
    carry ``word_starts``, shaped like their ``input_ids``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        encoding = super().__call__(*args, **kwargs)
        ids = encoding.get("input_ids")
        if ids is None or not encoding.encodings:
            return encoding
        starts = []
        for row in range(len(encoding.encodings)):
            words = encoding.word_ids(row)
            starts.append([word is not None and (t == 0 or words[t - 1] != word) for t, word in enumerate(words)])
        if isinstance(ids, torch.Tensor):
            encoding["word_starts"] = torch.tensor(starts, dtype=torch.bool, device=ids.device)
        elif ids and isinstance(ids[0], int):  # one sequence, not batched
            encoding["word_starts"] = starts[0]
        else:
            encoding["word_starts"] = starts
        return encoding
