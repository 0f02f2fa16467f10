"""The tag grammar: each scheme's prefixes, which tag may open, follow and close a sentence, and the ignore index.

Pure Python, no imports from the rest of ``ner``: the CRF's tables are built from it inside a model folder
loaded with ``trust_remote_code`` too (see ``ner.model.crf``). ``ner.data.schemes`` reads, converts and checks tags with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OUTSIDE = "O"
IGNORE_INDEX = -100  # label of sub-tokens, special tokens and padding: no loss, not scored

# Prefixes of each scheme, in the order they appear in the label list.
SCHEME_PREFIXES: dict[str, tuple[str, ...]] = {
    "IOB1": ("B", "I"),
    "IOB2": ("B", "I"),
    "IOBES": ("B", "I", "E", "S"),
    "BILOU": ("B", "I", "L", "U"),
}


@dataclass(frozen=True)
class SchemeRules:
    """One scheme's grammar, as prefix sets (``O`` is in none of them).

    continues: prefixes that carry on the previous tag's entity, so they may only follow a tag with a
        prefix in ``extendable`` and the same type, and may not open a sentence.
    extendable: prefixes of a tag that an entity can be carried on from.
    must_continue: prefixes of a tag that leaves its entity open, so the next tag must be in
        ``continues`` with the same type, and the sentence may not end on it.
    """

    continues: frozenset[str]
    extendable: frozenset[str]
    must_continue: frozenset[str]


# Transition rules of the schemes a model decodes in (IOB1 has none: its tags become IOB2 when read).
SCHEME_RULES: dict[str, SchemeRules] = {
    "IOB2": SchemeRules(continues=frozenset("I"), extendable=frozenset("BI"), must_continue=frozenset()),
    "IOBES": SchemeRules(continues=frozenset("IE"), extendable=frozenset("BI"), must_continue=frozenset("BI")),
    "BILOU": SchemeRules(continues=frozenset("IL"), extendable=frozenset("BI"), must_continue=frozenset("BI")),
}


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``, untyped ``"B" -> ("B", "")``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, entity_type = tag.partition("-")
    return prefix, entity_type


def join_tag(prefix: str, entity_type: str) -> str:
    return f"{prefix}-{entity_type}" if entity_type else prefix


def _rules(scheme: str) -> SchemeRules:
    if scheme not in SCHEME_RULES:
        raise ValueError(
            f"No transition rules for scheme {scheme!r}; use one of {', '.join(SCHEME_RULES)} "
            "(IOB1 tags are converted to IOB2 when read)."
        )
    return SCHEME_RULES[scheme]


def may_follow(previous: str, current: str, scheme: str) -> bool:
    """Whether tag ``current`` may directly follow tag ``previous`` in a valid ``scheme`` sentence."""
    rules = _rules(scheme)
    (previous_prefix, previous_type), (prefix, entity_type) = split_tag(previous), split_tag(current)
    same_type = previous_prefix != OUTSIDE and previous_type == entity_type
    if prefix in rules.continues and not (previous_prefix in rules.extendable and same_type):
        return False
    return not (previous_prefix in rules.must_continue and not (prefix in rules.continues and same_type))


def may_start(tag: str, scheme: str) -> bool:
    """Whether a ``scheme`` sentence may open with ``tag`` (not with one that carries on an entity)."""
    return split_tag(tag)[0] not in _rules(scheme).continues


def may_end(tag: str, scheme: str) -> bool:
    """Whether a ``scheme`` sentence may close with ``tag`` (not with one that leaves its entity open)."""
    return split_tag(tag)[0] not in _rules(scheme).must_continue


def transition_tables(label_list: Sequence[str], scheme: str) -> tuple[list[list[bool]], list[bool], list[bool]]:
    """``(transitions, start, end)`` over ``label_list``, True where ``scheme`` allows it.

    ``transitions[i][j]`` is whether label ``j`` may directly follow label ``i``; ``start[i]``/``end[i]``
    whether a sentence may open/close with label ``i``. Every label must use the scheme's prefixes.
    """
    _rules(scheme)
    known = set(SCHEME_PREFIXES[scheme]) | {OUTSIDE}
    for label in label_list:
        if split_tag(label)[0] not in known:
            raise ValueError(
                f"Label {label!r} does not belong to scheme {scheme}, whose prefixes are "
                f"{', '.join(SCHEME_PREFIXES[scheme])} (plus 'O'); pass the scheme the labels use."
            )
    return (
        [[may_follow(previous, current, scheme) for current in label_list] for previous in label_list],
        [may_start(label, scheme) for label in label_list],
        [may_end(label, scheme) for label in label_list],
    )


def continuation_labels(label_list: Sequence[str]) -> list[int]:
    """Label id for the non-first sub-tokens of a word, by the word's label id: ``I-X`` for any tag of type X.

    A continuation piece is inside its word's entity and never opens or closes one, in every scheme
    (B-X, E-X, S-X, L-X, U-X -> I-X); ``O`` stays ``O``. Where the list has no ``I-X`` the tag is kept.
    """
    index = {label: i for i, label in enumerate(label_list)}
    result = []
    for i, label in enumerate(label_list):
        prefix, entity_type = split_tag(label)
        result.append(index.get(join_tag("I", entity_type), i) if prefix != OUTSIDE else i)
    return result
