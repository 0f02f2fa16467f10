"""Tests for ner/data/spans.py: span spellings, words split at span boundaries, refused spans, and the round trip."""

from __future__ import annotations

import random
import re

import pytest

from ner.errors import DataFileError
from ner.data.spans import WORD, Span, parse_spans, span_output, spans_of, words_and_tags

TEXT = "Maria Lopez visited Porto."


def parse(value, text: str = TEXT) -> list[Span]:
    return parse_spans(value, text, "in.jsonl", 7, "label")


def test_the_word_rule_is_prediction_s():
    from ner.predict.predictor import WORD as PREDICTION_WORD

    assert PREDICTION_WORD is WORD


@pytest.mark.parametrize(
    "value",
    [
        [[20, 25, "LOC"], [0, 11, "PER"]],  # doccano (in any order)
        [{"start": 0, "end": 11, "text": "Maria Lopez", "labels": ["PER"]}, {"start": 20, "end": 25, "text": "Porto", "labels": ["LOC"]}],  # Label Studio JSON-min
        [{"start": 0, "end": 11, "label": "PER", "token_start": 0, "token_end": 1}, {"start": 20, "end": 25, "label": "LOC"}],  # Prodigy/spaCy
        [{"id": 1, "start_offset": 0, "end_offset": 11, "label": "PER"}, {"id": 2, "start_offset": 20, "end_offset": 25, "label": "LOC"}],  # doccano entities
    ],
    ids=["doccano", "label-studio", "prodigy", "doccano-entities"],
)
def test_every_tool_s_spelling_reads_the_same(value):
    spans = parse(value)
    assert spans == [Span(0, 11, "PER"), Span(20, 25, "LOC")]
    words, offsets, tags, split = words_and_tags(TEXT, spans)
    assert words == ["Maria", "Lopez", "visited", "Porto", "."]
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert split == 0
    assert spans_of(tags, offsets) == spans


def test_a_boundary_inside_a_word_splits_the_word():
    text = "NewYorker and x-ray"
    spans = parse([[0, 3, "LOC"], [3, 9, "MISC"], [16, 18, "X"]], text)
    words, offsets, tags, split = words_and_tags(text, spans)
    assert words == ["New", "Yorker", "and", "x", "-", "ra", "y"]
    assert tags == ["B-LOC", "B-MISC", "O", "O", "O", "B-X", "O"]
    assert split == 2  # NewYorker and ray
    assert spans_of(tags, offsets) == spans


def test_adjacent_entities_of_one_type_stay_apart():
    text = "AB CD"
    spans = parse([[0, 1, "X"], [1, 2, "X"], [3, 5, "X"]], text)
    words, offsets, tags, _ = words_and_tags(text, spans)
    assert (words, tags) == (["A", "B", "CD"], ["B-X", "B-X", "B-X"])
    assert spans_of(tags, offsets) == spans


BAD = [
    ([[0, 5, "PER"], [3, 11, "LOC"]], r'"label" spans 1 \[0, 5, \'PER\'\] and 2 \[3, 11, \'LOC\'\] overlap: a word can be in one entity only'),
    ([[0, 5, "PER"], [0, 5, "PER"]], r"overlap \(the same span twice\)"),
    ([[20, 40, "LOC"]], r"span 1 \[20, 40, 'LOC'\]: offsets out of range: need 0 <= start < end <= 26"),
    ([[-1, 5, "PER"]], r"offsets out of range"),
    ([[5, 5, "PER"]], r"offsets out of range"),
    ([{"start": 0, "end": 5, "text": "Mario", "label": "PER"}], r"its text 'Mario' differs from the text at \[0, 5\], 'Maria'; fix the offsets"),
    ([[0, 6, "PER"]], r"'Maria ' starts or ends with whitespace, which no word holds; trim the span to \[0, 5\]"),
    ([[5, 6, "PER"]], r"covers only whitespace ' '; remove the span"),
    ([[0, 5, "B PER"]], r"the label must be one non-empty string without spaces"),
    ([{"start": 0, "end": 5, "labels": ["PER", "LOC"]}], r"the label must be one non-empty string"),
    ([[0, 5]], r"expected \[start, end, label\]"),
    ([{"start": "0", "end": 5, "label": "PER"}], r"expected \[start, end, label\]"),
    ([[True, 5, "PER"]], r"expected \[start, end, label\]"),
    ({"start": 0}, r'"label" must be a list of spans, found dict'),
]


@pytest.mark.parametrize(("value", "pattern"), BAD, ids=[
    "overlap", "duplicate", "past-end", "negative", "empty", "text-mismatch", "whitespace-edge", "whitespace-only",
    "label-space", "two-labels", "short", "string-offset", "bool-offset", "not-a-list",
])
def test_spans_that_cannot_come_back_as_themselves_are_refused(value, pattern):
    with pytest.raises(DataFileError, match=r"^in\.jsonl:7: " + ".*" + pattern):
        parse(value)


@pytest.mark.parametrize(
    ("span", "problem"),
    [
        ({"start": 3, "end": 8, "text": "Maria", "labels": ["PER"]}, "out of range"),
        ({"start": 3, "end": 5, "text": "Ma", "labels": ["PER"]}, "differs from the text"),
        ([3, 8, "PER"], "out of range"),
    ],
)
def test_utf16_offsets_are_named_as_such(span, problem):
    text = "😀 Maria"  # JavaScript counts the emoji as two code units: Maria is [3, 8] there, [2, 7] here
    with pytest.raises(DataFileError, match=f"{problem}.*; the offsets look like UTF-16 code units"):
        parse([span], text)
    with pytest.raises(DataFileError) as plain:
        parse([{"start": 0, "end": 2, "text": "Ma", "label": "PER"}], "Mo Maria")
    assert "UTF-16" not in str(plain.value)  # no such hint for a text without astral characters


def test_span_output_keeps_the_record_and_writes_both_spellings():
    entities = [{"start": 0, "end": 11, "type": "PER", "text": "Maria Lopez", "score": 0.9}]
    row = span_output({"id": 3, "meta": {"a": 1}, "label": [[1, 2, "OLD"]], "spans": [], "text": "old"}, TEXT, entities)
    assert row == {
        "id": 3,
        "meta": {"a": 1},
        "text": TEXT,
        "spans": [{"start": 0, "end": 11, "label": "PER", "text": "Maria Lopez", "score": 0.9}],
        "label": [[0, 11, "PER"]],
    }
    assert parse(row["spans"]) == parse(row["label"]) == [Span(0, 11, "PER")]


# --- fuzzed round trip: spans in -> words and tags -> spans out ------------------------------------

PIECES = [
    "a", "Z", "é", "e\u0301", "ß", "ø", "Ω", "ж", "中", "7", "_", "😀", "👩\u200d💻", "🇵🇹", "\u200b", "\ufeff",
    ".", "-", "'", "(", "’", " ", "  ", "\t", "\n", "\r\n", "\u00a0",
]
LABELS = ["PER", "LOC", "ORG", "B-X", "é"]


def annotated(rng: random.Random) -> tuple[str, list[list]]:
    """A text of letters, accents, emoji, U+200B/U+FEFF, punctuation and CRLF, and random non-overlapping spans.

    Span boundaries fall anywhere (inside words too) but on the entity's first and last non-space characters;
    spans touch each other and the text's edges often.
    """
    text = "".join(rng.choices(PIECES, k=rng.randint(1, 30)))
    solid = [i for i, c in enumerate(text) if not c.isspace()]  # where a span may start (and, +1, end)
    if not solid:
        return text, []
    cuts = sorted(set(rng.choices(solid + [solid[-1] + 1], k=rng.randint(0, 12))) | {solid[0], solid[-1] + 1})
    spans = []
    for start, end in zip(cuts, cuts[1:]):
        covered = text[start:end]
        if covered.strip() == covered and rng.random() < 0.7:
            spans.append([start, end, rng.choice(LABELS)])
    rng.shuffle(spans)
    return text, spans


def test_spans_survive_the_round_trip():
    """2,000 seeded random texts: the spans read back from the tags are the spans that went in."""
    rng = random.Random(16)
    seen = set()
    for _ in range(2000):
        text, raw = annotated(rng)
        case = f"text={text!r} spans={raw!r}"
        spans = parse(raw, text)
        words, offsets, tags, split = words_and_tags(text, spans)
        assert spans_of(tags, offsets) == spans, case
        assert words == [text[start:end] for start, end in offsets], case
        # every non-space character is in exactly one word, in order
        assert "".join(words) == re.sub(r"\s", "", text), case
        assert all(word and not re.search(r"\s", word) for word in words), case
        # what the corpus holds, so that the round trip is known to cover it
        if any(s.start == 0 for s in spans) and any(s.end == len(text) for s in spans):
            seen.add("both edges")
        if any(a.end == b.start for a, b in zip(spans, spans[1:])):
            seen.add("adjacent")
        seen.update({"split"} if split else set())
        for piece, name in (("\r\n", "crlf"), ("\u200b", "zwsp"), ("😀", "emoji"), ("\u0301", "combining"), ("é", "accent")):
            if any(piece in text[s.start : s.end] for s in spans):
                seen.add(name)
    assert seen == {"both edges", "adjacent", "split", "crlf", "zwsp", "emoji", "combining", "accent"}
