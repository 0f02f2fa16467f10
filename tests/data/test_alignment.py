from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from ner.data.alignment import (
    encode_sentences, plan_windows, require_fast_tokenizer, resolve_max_seq_length, word_sources,
    word_tags,
)
from ner.data.schemes import IGNORE_INDEX, continuation_labels

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
LABEL2ID = {label: i for i, label in enumerate(LABELS)}
ID2LABEL = dict(enumerate(LABELS))


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


def held_words(out, row):
    """``(word index, position, margin)`` of each word whose first sub-token window ``row`` holds."""
    first = out["first_word"][row]
    return [(first + i, p, m) for i, (p, m) in enumerate(zip(out["word_positions"][row], out["word_margins"][row]))]


def encode(tokenizer, words, tags=None, **kwargs):
    settings = dict(tokenizer=tokenizer, max_seq_length=64, label2id=LABEL2ID, continuation=continuation_labels(LABELS))
    settings.update(kwargs)
    batch_words = words if isinstance(words[0], list) else [words]
    batch_tags = None if tags is None else (tags if isinstance(tags[0], list) else [tags])
    return encode_sentences(batch_words, tags=batch_tags, **settings)


def test_first_sub_token_carries_the_label(tokenizer):
    words, tags = ["Maria", "said", "Porto"], ["B-PER", "O", "B-LOC"]
    out = encode(tokenizer, words, tags)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens[:3] == ["[CLS]", "m", "##a"]  # "maria" is split into characters by the tiny vocabulary
    assert out["first_word"] == [0]
    labels, positions = out["labels"][0], out["word_positions"][0]
    assert [tokens[p] for p in positions] == ["m", "said", "p"]
    assert [labels[p] for p in positions] == [LABEL2ID[t] for t in tags]
    assert sum(label != IGNORE_INDEX for label in labels) == 3
    assert labels[0] == labels[-1] == IGNORE_INDEX and tokens[-1] == "[SEP]"
    assert out["sentence_index"] == [0]


def test_label_all_tokens_turns_b_into_i_after_the_first_piece(tokenizer):
    out = encode(tokenizer, ["Maria", "said"], ["B-PER", "O"], label_all_tokens=True)
    labels = out["labels"][0]
    assert labels[1] == LABEL2ID["B-PER"]
    assert set(labels[2:6]) == {LABEL2ID["I-PER"]}  # ##a ##r ##i ##a
    assert out["word_positions"][0] == [1, 6]


@pytest.mark.parametrize(
    "length, budget, stride, expected",
    [
        (5, 10, 2, [(0, 5)]),
        (10, 10, 2, [(0, 10)]),
        (11, 10, 2, [(0, 10), (8, 11)]),
        (25, 10, 4, [(0, 10), (6, 16), (12, 22), (18, 25)]),
        (12, 10, 0, [(0, 10), (10, 12)]),
    ],
)
def test_plan_windows(length, budget, stride, expected):
    windows = plan_windows(length, budget, stride)
    assert windows == expected
    assert all(b[0] == a[1] - stride for a, b in zip(windows, windows[1:]))


def test_stride_must_leave_progress():
    with pytest.raises(ValueError, match="stride must be in"):
        plan_windows(30, 10, 10)


@pytest.mark.parametrize("words_in, max_seq_length, stride", [(1000, 64, 16), (20000, 128, 32)])
def test_every_word_of_a_huge_sentence_gets_exactly_one_prediction(tokenizer, words_in, max_seq_length, stride):
    words = [f"w{i % 97}" for i in range(words_in)]
    tags = ["B-PER" if i % 7 == 0 else "O" for i in range(words_in)]
    out = encode(tokenizer, words, tags, max_seq_length=max_seq_length, stride=stride)
    assert max(len(ids) for ids in out["input_ids"]) == max_seq_length
    # Neighbouring windows share `stride` sub-tokens: the sentence pieces overlap by exactly that much.
    pieces = [ids[1:-1] for ids in out["input_ids"]]
    assert all(a[-stride:] == b[:stride] for a, b in zip(pieces, pieces[1:]))
    # Every word is labelled (trained) in at least one window, at its first piece.
    labelled = set()
    for row, labels in enumerate(out["labels"]):
        labelled.update(w for w, p, _ in held_words(out, row) if p >= 0 and labels[p] == LABEL2ID[tags[w]])
    assert labelled == set(range(words_in))
    # Predict with the gold label ids placed at the first pieces: every word comes back, in order.
    gold_ids = [[LABEL2ID[tags[0]]] * max_seq_length for _ in out["input_ids"]]
    for row in range(len(out["input_ids"])):
        for w, p, _ in held_words(out, row):
            if p >= 0:
                gold_ids[row][p] = LABEL2ID[tags[w]]
    predicted = word_tags(gold_ids, word_sources(out, [words_in]), ID2LABEL)
    assert predicted == [tags]


def test_window_data_grows_with_the_window_not_the_sentence(tokenizer):
    """A window lists only the words whose first sub-token it holds: a 20,000-word sentence in ~600 windows
    stores ~1.3 entries per word (overlap), not 20,000 per window."""
    words = [f"w{i % 97}" for i in range(20000)]
    out = encode(tokenizer, words, max_seq_length=128, stride=32)
    assert len(out["input_ids"]) > 500
    assert all(len(positions) <= 126 for positions in out["word_positions"])
    assert sum(len(positions) for positions in out["word_positions"]) < 1.5 * len(words)
    assert all(len(p) == len(m) for p, m in zip(out["word_positions"], out["word_margins"]))


def test_each_window_holds_the_run_of_words_that_start_in_it(tokenizer):
    words = ["the", "a", "of", "in", "to", "and", "said", "on", "for", "at", "by", "with", "from", "was", "is"]  # a piece each
    out = encode(tokenizer, words, max_seq_length=8, stride=2)  # windows of 6: [0,6) [4,10) [8,14) [12,15)
    assert out["first_word"] == [0, 4, 8, 12]
    for row, ids in enumerate(out["input_ids"]):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        held = held_words(out, row)
        assert [tokens[p] for _, p, _ in held] == [words[w] for w, _, _ in held]
    assert [m for _, _, m in held_words(out, 1)] == [0, 1, 2, 2, 1, 0]
    assert [len(out["word_positions"][row]) for row in range(4)] == [6, 6, 6, 3]


def test_word_without_sub_tokens_inside_a_window_run_is_listed_as_absent(tokenizer):
    words = ["the", "a", "of", "in", "\u200b", "to", "and", "said"]  # pieces: the a of in | to and said
    out = encode(tokenizer, words, max_seq_length=6, stride=1)  # windows of 4 pieces: [0,4) [3,7)
    assert out["first_word"] == [0, 3]
    assert out["word_positions"] == [[1, 2, 3, 4], [1, -1, 2, 3, 4]]
    sources = word_sources(out, [len(words)])[0]
    assert sources[4] is None and sources[3] == (0, 4) and sources[5] == (1, 2)
    marker = [[row] * 6 for row in range(2)]
    assert word_tags(marker, [sources], {0: "B-PER", 1: "I-PER"}) == [["B-PER"] * 4 + ["O"] + ["I-PER"] * 3]


def test_a_sentence_without_examples_is_refused():
    examples = {"sentence_index": [0], "first_word": [0], "word_positions": [[1]], "word_margins": [[0]]}
    with pytest.raises(ValueError, match=r"No prediction for sentences \[1\]"):
        word_sources(examples, [1, 2])


def test_word_takes_the_window_where_it_sits_farthest_from_an_edge(tokenizer):
    words = ["said"] * 30  # one piece per word
    out = encode(tokenizer, words, max_seq_length=12, stride=4)  # windows of 10: [0,10) [6,16) [12,22) ...
    margins = [{w: m for w, _, m in held_words(out, row)} for row in range(len(out["input_ids"]))]
    assert margins[0][7] == 2 and margins[1][7] == 1
    marker = [[row] * 12 for row in range(len(out["input_ids"]))]  # predicted id = window number
    labels = {i: f"window{i}" for i in range(len(out["input_ids"]))}
    predicted = word_tags(marker, word_sources(out, [len(words)]), labels)[0]
    assert predicted[7] == "window0" and predicted[9] == "window1" and predicted[29] == f"window{len(labels) - 1}"


def test_word_without_sub_tokens_gets_no_position(tokenizer):
    out = encode(tokenizer, ["said", "\u200b", "Porto"], ["O", "O", "B-LOC"])
    assert out["word_positions"][0][1] == -1


def test_context_is_shown_but_not_labelled_and_stays_in_its_document(tokenizer):
    sentences = [["the", "city"], ["Maria", "said"], ["the", "team"], ["won"]]
    tags = [["O", "O"], ["B-PER", "O"], ["O", "O"], ["O"]]
    documents = [0, 0, 0, 1]
    plain = encode(tokenizer, sentences, tags)
    context = encode(tokenizer, sentences, tags, documents=documents, context_size=4)
    tokens = tokenizer.convert_ids_to_tokens(context["input_ids"][1])
    assert tokens == ["[CLS]", "the", "city", "m", "##a", "##r", "##i", "##a", "said", "the", "team", "[SEP]"]
    # The sentence's own labels are the same; context positions carry none.
    kept = [l for l in context["labels"][1] if l != IGNORE_INDEX]
    assert kept == [l for l in plain["labels"][1] if l != IGNORE_INDEX]
    assert context["labels"][1][1:3] == [IGNORE_INDEX] * 2 and context["labels"][1][-3:-1] == [IGNORE_INDEX] * 2
    assert [tokens[p] for p in context["word_positions"][1]] == ["m", "said"]
    # Sentence 3 is alone in document 1: context never crosses the -DOCSTART- boundary.
    assert context["input_ids"][3] == plain["input_ids"][3]
    assert tokenizer.convert_ids_to_tokens(context["input_ids"][2])[-2] == "team"  # nothing after, same document ends


class Tokenizer:
    def __init__(self, model_max_length):
        self.model_max_length = model_max_length


class Config:
    def __init__(self, max_position_embeddings):
        self.max_position_embeddings = max_position_embeddings


@pytest.mark.parametrize(
    "requested, model_max_length, positions, expected",
    [
        (None, 128, 128, 128),  # default: the model's limit...
        (None, 10**30, 1024, 512),  # ...at most 512 (a tokenizer without a limit says 1e30)
        (64, 128, 128, 64),
        (1024, 10**30, 1024, 1024),  # an explicit window above 512 that the model takes is kept
        (128, 128, 256, 128),
    ],
)
def test_max_seq_length_rule(requested, model_max_length, positions, expected):
    assert resolve_max_seq_length(requested, Tokenizer(model_max_length), Config(positions)) == expected


@pytest.mark.parametrize(
    "requested, model_max_length, positions, pattern",
    [
        (129, 128, 512, r"max_seq_length 129 is over the model's limit of 128 positions .*give at most 128, or leave it out for 128"),
        (600, 10**30, 514, r"max_seq_length 600 is over the model's limit of 514 positions .*leave it out for 512"),
        (2, 128, 128, r"max_seq_length 2 leaves no room for a sub-token beside \[CLS\] and \[SEP\]; give at least 3"),
        (-5, 128, 128, r"max_seq_length -5 leaves no room"),
        (0, 512, 514, r"max_seq_length 0 leaves no room .*leave it out for 512"),  # 0 is not "not given"
    ],
)
def test_max_seq_length_over_the_limit_is_refused(requested, model_max_length, positions, pattern):
    with pytest.raises(ValueError, match=pattern):
        resolve_max_seq_length(requested, Tokenizer(model_max_length), Config(positions))


def test_continuation_labels():
    assert continuation_labels(LABELS) == [0, 2, 2, 4, 4]


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="slow \\(Python\\) tokenizer; label alignment needs a fast one"):
        require_fast_tokenizer(Slow(), "my-model")
