"""Tags: the one home of what a tag means, for every module that reads or writes tags.

Prefixes of each scheme, the ignore index of sub-token labels, which tag may start, follow and end a
sentence (the rules constrained decoding and the CRF enforce), the entities of a tag sequence (read
by scores, reports and the predictor alike), scheme detection, IOB1 -> IOB2 conversion, and the label
list. Schemes are declared as data (their prefixes, their transition rules); everything else is one
shared loop over (prefix, type) pairs. Pure Python: ``ner.model.crf`` turns the rules into tensors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

from seqeval import scheme as seqeval_schemes

from ner.tag_rules import (  # the grammar lives there (it travels in model folders); read from here by the rest of ner
    IGNORE_INDEX, OUTSIDE, SCHEME_PREFIXES, SCHEME_RULES, SchemeRules, continuation_labels, join_tag, may_end, may_follow,
    may_start, split_tag, transition_tables,
)

logger = logging.getLogger(__name__)

TAG_PATTERN = re.compile(r"O|[BIESLU](-\S+)?")  # a tag in any scheme, read with fullmatch

# How each prefix reads in an entity, for every scheme: BILOU's L and U are IOBES's E and S.
_SINGLE_OR_LAST = frozenset("ESLU")  # closes the entity it belongs to
_CONTINUES = frozenset("IEL")  # carries on the previous tag's entity when the type matches


def is_tag(value: str) -> bool:
    """True for ``O`` or ``PREFIX`` / ``PREFIX-TYPE`` with a prefix of any scheme (B, I, E, S, L, U)."""
    return TAG_PATTERN.fullmatch(value) is not None


def check_parallel(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], words=None) -> None:
    """Refuses gold and predicted tags (and words, when given) that differ in sentences or sentence lengths."""
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
        raise ValueError("gold and predicted tags must have the same sentences and lengths")
    if words is not None and (len(words) != len(gold) or any(len(w) != len(g) for w, g in zip(words, gold))):
        raise ValueError("words and tags must have the same sentences and lengths")


WordSpan = tuple[int, int, str]  # an entity in a sentence: (first word, end word exclusive, type)


def entities(tags: Sequence[str]) -> list[WordSpan]:
    """Entities of one sentence as ``(first word, end word exclusive, type)``, read the conlleval way.

    This is the reading conlleval, the CoNLL shared tasks, the Hugging Face example (seqeval's default
    mode) and ``pipeline()`` use: an ``I-X`` after ``O`` or after another type opens an entity instead of
    being dropped, and a type change ends one. ``E-``/``L-`` close an entity and ``S-``/``U-`` are an
    entity on their own (IOBES, BILOU); an ``E-X``/``L-X`` with nothing open opens and closes one. Every
    scheme is read by this one loop, so scores, reports and the predictor's spans never disagree.
    """
    found: list[WordSpan] = []
    start: int | None = None  # first word of the open entity, None when none is open
    open_type = ""
    for position, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        if start is not None and not (prefix in _CONTINUES and entity_type == open_type):
            found.append((start, position, open_type))
            start = None
        if start is None and prefix != OUTSIDE:
            start, open_type = position, entity_type
        if prefix in _SINGLE_OR_LAST:
            found.append((start, position + 1, open_type))
            start = None
    if start is not None:
        found.append((start, len(tags), open_type))
    return found


def _starts_chunk(previous: str | None, tag: str) -> bool:
    """True when ``tag`` (a B or I tag) is the first tag of an entity read the conlleval way."""
    if previous is None or previous == OUTSIDE:
        return True
    return split_tag(previous)[1] != split_tag(tag)[1]


def count_entity_starts(tags: Sequence[str]) -> tuple[int, int]:
    """(entities opened by ``B-``, entities opened by ``I-``) in one sentence."""
    b_starts = i_starts = 0
    previous = None
    for tag in tags:
        prefix = split_tag(tag)[0]
        if prefix == "I" and _starts_chunk(previous, tag):
            i_starts += 1
        elif prefix == "B" and _starts_chunk(previous, tag):
            b_starts += 1
        previous = tag
    return b_starts, i_starts


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """Name the scheme of the given tags: ``IOB1``, ``IOB2``, ``IOBES`` or ``BILOU``.

    Files with E/S prefixes are IOBES, with L/U prefixes BILOU. Among B/I/O files, IOB1 (CoNLL-2003's
    original encoding) opens most entities with ``I-``, IOB2 with ``B-``.
    """
    prefixes: set[str] = set()
    b_starts = i_starts = 0
    for tags in tag_sequences:
        prefixes.update(split_tag(tag)[0] for tag in tags)
        b, i = count_entity_starts(tags)
        b_starts += b
        i_starts += i
    if prefixes & {"L", "U"}:
        if prefixes & {"E", "S"}:
            raise ValueError(
                f"Tags mix BILOU (L-, U-) and IOBES (E-, S-) prefixes: {sorted(prefixes)}. "
                "Use one scheme in all files."
            )
        return "BILOU"
    if prefixes & {"E", "S"}:
        return "IOBES"
    return "IOB1" if i_starts > b_starts else "IOB2"


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite an entity-opening ``I-X`` as ``B-X`` (IOB1 -> IOB2; also repairs invalid IOB2)."""
    converted = []
    previous = None
    for tag in tags:
        prefix, entity_type = split_tag(tag)
        if prefix == "I" and _starts_chunk(previous, tag):
            tag = join_tag("B", entity_type)
        converted.append(tag)
        previous = tag
    return converted


def as_scored(tags: Sequence[str]) -> list[str]:
    """Gold tags as ``run_ner.py`` reads, scores and writes them: B/I/O tags in IOB2 (an entity opened by ``I-``, as
    in IOB1, gets ``B-``: conlleval's reading); tags of other schemes (E-, S-, L-, U-) as they are."""
    if all(split_tag(tag)[0] in ("B", "I", "O") for tag in tags):
        return to_iob2(tags)
    return list(tags)


def build_label_list(tag_sequences: Iterable[Sequence[str]], scheme: str) -> list[str]:
    """``O`` first, then every entity type in sorted order with all of the scheme's prefixes.

    Prefixes that never occur in the data are included too, so the list depends only on the set of
    entity types: stable across runs and splits.
    """
    types = sorted({split_tag(tag)[1] for tags in tag_sequences for tag in tags if tag != OUTSIDE})
    prefixes = SCHEME_PREFIXES[scheme]
    return [OUTSIDE] + [join_tag(prefix, t) for t in types for prefix in prefixes]


def seqeval_scheme(scheme: str):
    """The seqeval scheme class for strict entity matching."""

    classes = {
        "IOB1": seqeval_schemes.IOB2,  # IOB1 data is converted to IOB2 on read
        "IOB2": seqeval_schemes.IOB2,
        "IOBES": seqeval_schemes.IOBES,
        "BILOU": seqeval_schemes.BILOU,
    }
    return classes[scheme]
