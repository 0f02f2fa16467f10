from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from ner.alignment import align_batch, continuation_labels, require_fast_tokenizer
from ner.modeling import IGNORE_INDEX

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
LABEL2ID = {label: i for i, label in enumerate(LABELS)}


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


def align(tokenizer, words, tags, **kwargs):
    settings = dict(tokenizer=tokenizer, label2id=LABEL2ID, max_seq_length=64, continuation=continuation_labels(LABELS))
    settings.update(kwargs)
    return align_batch({"words": [words], "tags": [tags]}, **settings)


def test_first_sub_token_carries_the_label(tokenizer):
    words, tags = ["Maria", "said", "Porto"], ["B-PER", "O", "B-LOC"]
    out = align(tokenizer, words, tags)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens[:3] == ["[CLS]", "m", "##a"]  # "maria" is split into characters by the tiny vocabulary
    labels, positions = out["labels"][0], out["word_positions"][0]
    assert [tokens[p] for p in positions] == ["m", "said", "p"]
    assert [labels[p] for p in positions] == [LABEL2ID[t] for t in tags]
    assert sum(label != IGNORE_INDEX for label in labels) == 3
    assert labels[0] == labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    assert out["truncated_words"] == [0]


def test_label_all_tokens_turns_b_into_i_after_the_first_piece(tokenizer):
    out = align(tokenizer, ["Maria", "said"], ["B-PER", "O"], label_all_tokens=True)
    labels = out["labels"][0]
    assert labels[1] == LABEL2ID["B-PER"]
    assert set(labels[2:6]) == {LABEL2ID["I-PER"]}  # ##a ##r ##i ##a
    assert out["word_positions"][0] == [1, 6]


def test_truncation_is_counted(tokenizer):
    words = ["said"] * 20
    out = align(tokenizer, words, ["O"] * 20, max_seq_length=12)
    assert len(out["input_ids"][0]) == 12
    assert out["truncated_words"] == [10]
    assert out["word_positions"][0][10:] == [-1] * 10


def test_word_without_sub_tokens_gets_no_position(tokenizer):
    out = align(tokenizer, ["said", "\u200b", "Porto"], ["O", "O", "B-LOC"])
    assert out["word_positions"][0][1] == -1
    assert out["truncated_words"] == [0]


def test_continuation_labels():
    assert continuation_labels(LABELS) == [0, 2, 2, 4, 4]


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="slow \\(Python\\) tokenizer; label alignment needs a fast one"):
        require_fast_tokenizer(Slow(), "my-model")
