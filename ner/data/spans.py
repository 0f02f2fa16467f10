"""Character-span annotations <-> words with IOB2 tags.

Annotation tools export entities as character offsets into a text: doccano ``[start, end, "PER"]``
(or ``{"start_offset", "end_offset", "label"}``), Label Studio's JSON-min ``{"start", "end", "text",
"labels": ["PER"]}``, Prodigy/spaCy ``{"start", "end", "label"}``. Offsets count characters (Unicode
code points, Python string indices) from 0, the end exclusive.

Words: the text is split by `WORD`, the rule prediction uses on raw text (runs of letters/digits,
every other non-space character alone), and a word that a span starts or ends inside is split there.
Every span is then a run of whole words, tagged IOB2 (``B-`` on its first word, ``I-`` on the
others), and `spans_of` gives back exactly the spans that went in: none is widened, narrowed or
dropped. A span that cannot come back as itself (overlapping another, out of range, its ``text``
not the text at its offsets, starting or ending on whitespace) is refused with `DataFileError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from ner.data.schemes import entities
from ner.errors import DataFileError

# Words of raw text: runs of letters/digits, and every other non-space character on its own, which is how
# BERT's own pre-tokenizer splits ("Porto." is "Porto" + "."). Prediction (ner.predict.predictor) splits raw text
# with this same pattern.
WORD = re.compile(r"\w+|\S")


class Span(NamedTuple):
    start: int  # character offset of the entity's first character
    end: int  # exclusive
    label: str  # the entity type, e.g. PER


def _show(span: Any) -> str:
    shown = repr(span)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utf16_hint(text: str, start: int, end: int, span_text: Any) -> str:
    """A hint when the offsets fit the text counted in UTF-16 code units (as JavaScript counts), else ''."""
    units = text.encode("utf-16-le")
    if len(units) // 2 == len(text) or not 0 <= start < end <= len(units) // 2:
        return ""  # no character outside the BMP, so both counts agree; or out of range either way
    try:
        fits = span_text is None or units[2 * start : 2 * end].decode("utf-16-le") == span_text
    except UnicodeDecodeError:  # the offsets cut a surrogate pair
        fits = False
    return (
        "; the offsets look like UTF-16 code units (JavaScript string indices), which count an emoji as 2: convert "
        "them to character offsets"
    ) if fits else ""


def _parts(item: Any) -> tuple[Any, Any, Any, Any]:
    """(start, end, label, text or None) of one span in any of the accepted spellings."""
    if isinstance(item, (list, tuple)) and len(item) == 3:
        return item[0], item[1], item[2], None
    if isinstance(item, dict):
        start = item.get("start", item.get("start_offset"))
        end = item.get("end", item.get("end_offset"))
        label = item.get("label")
        if label is None and "labels" in item:  # Label Studio: a list with one label
            labels = item["labels"]
            label = labels[0] if isinstance(labels, list) and len(labels) == 1 else labels
        return start, end, label, item.get("text")
    return None, None, None, None


def parse_spans(value: Any, text: str, path: str, line: int, field: str) -> list[Span]:
    """The spans of one record's ``field``, checked against its ``text``, sorted by start.

    Raises `DataFileError` at ``path:line`` for a span that is malformed, out of range, starts or ends
    on whitespace, has a ``text`` other than the text at its offsets, or overlaps another span.
    """
    if not isinstance(value, list):
        raise DataFileError(
            path, line, f'"{field}" must be a list of spans, found {type(value).__name__}; give [] for a text '
            "without entities",
        )
    spans: list[tuple[Span, int]] = []
    for number, item in enumerate(value, start=1):
        where = f'"{field}" span {number} {_show(item)}'
        start, end, label, span_text = _parts(item)
        if not (_is_int(start) and _is_int(end)):
            raise DataFileError(
                path, line, f"{where}: expected [start, end, label], or an object with integer \"start\" and \"end\" "
                'and a "label" (or "labels": [one label])',
            )
        if not isinstance(label, str) or not label or any(c.isspace() for c in label):
            raise DataFileError(
                path, line, f"{where}: the label must be one non-empty string without spaces (it becomes the tags "
                f"B-LABEL and I-LABEL), found {_show(label)}",
            )
        if not 0 <= start < end <= len(text):
            raise DataFileError(
                path, line, f"{where}: offsets out of range: need 0 <= start < end <= {len(text)} (the text's length "
                f"in characters; the end is exclusive){_utf16_hint(text, start, end, span_text)}",
            )
        if span_text is not None and span_text != text[start:end]:
            raise DataFileError(
                path, line, f"{where}: its text {span_text!r} differs from the text at [{start}, {end}], "
                f"{text[start:end]!r}; fix the offsets or the span's text{_utf16_hint(text, start, end, span_text)}",
            )
        covered = text[start:end]
        if not covered.strip():
            raise DataFileError(path, line, f"{where}: covers only whitespace {covered!r}; remove the span")
        if covered != covered.strip():
            trimmed_start = start + len(covered) - len(covered.lstrip())
            trimmed_end = end - (len(covered) - len(covered.rstrip()))
            raise DataFileError(
                path, line, f"{where}: {covered!r} starts or ends with whitespace, which no word holds; trim the "
                f"span to [{trimmed_start}, {trimmed_end}]",
            )
        spans.append((Span(start, end, label), number))
    spans.sort(key=lambda pair: (pair[0].start, pair[0].end))
    for (previous, first), (span, second) in zip(spans, spans[1:]):
        if span.start < previous.end:
            same = " (the same span twice)" if span == previous else ""
            raise DataFileError(
                path, line, f'"{field}" spans {first} {list(previous)} and {second} {list(span)} overlap{same}: a word '
                "can be in one entity only; remove or fix one of them",
            )
    return [span for span, _ in spans]


def words_and_tags(text: str, spans: Sequence[Span]) -> tuple[list[str], list[tuple[int, int]], list[str], int]:
    """Words of ``text``, their ``(start, end)`` offsets, their IOB2 tags, and how many words a span boundary split.

    ``spans`` must be sorted and checked (`parse_spans`): each covers at least one non-space character.
    """
    boundaries = sorted({offset for span in spans for offset in (span.start, span.end)})
    offsets: list[tuple[int, int]] = []
    split = 0
    cut = 0  # index into boundaries of the first one not left of the current word
    for match in WORD.finditer(text):
        start, end = match.span()
        while cut < len(boundaries) and boundaries[cut] <= start:
            cut += 1
        inside = []
        while cut < len(boundaries) and boundaries[cut] < end:
            inside.append(boundaries[cut])
            cut += 1
        if inside:
            split += 1
        for piece_end in inside + [end]:
            offsets.append((start, piece_end))
            start = piece_end
    tags = []
    current = 0  # index of the first span not ending at or before the current word
    for start, end in offsets:
        while current < len(spans) and spans[current].end <= start:
            current += 1
        if current < len(spans) and spans[current].start <= start:
            span = spans[current]
            tags.append(("B-" if start == span.start else "I-") + span.label)
        else:
            tags.append("O")
    return [text[start:end] for start, end in offsets], offsets, tags, split


def spans_of(tags: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[Span]:
    """The character spans of a word sequence's entities (read the conlleval way), from each word's offsets."""
    return [Span(offsets[first][0], offsets[end - 1][1], label) for first, end, label in entities(tags)]


SPAN_FIELDS = ("spans", "entities", "label")  # the fields a record's spans may come in, looked for in this order
_OWN = ("start", "end", "type")  # the keys of a predicted entity that span_output renames


def span_output(fields: dict[str, Any], text: str, spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A record for annotation tools: ``fields`` (the input's own, less its spans), ``text``, and the spans twice.

    ``spans`` hold ``start``, ``end``, ``type`` (and any more keys, kept). They are written as ``"spans"``
    (Prodigy/spaCy: ``{"start", "end", "label", ...}``) and ``"label"`` (doccano: ``[start, end, label]``).
    """
    row = {key: value for key, value in fields.items() if key not in SPAN_FIELDS}
    row["text"] = text
    row["spans"] = [
        {"start": s["start"], "end": s["end"], "label": s["type"], **{k: v for k, v in s.items() if k not in _OWN}}
        for s in spans
    ]
    row["label"] = [[s["start"], s["end"], s["type"]] for s in spans]
    return row
