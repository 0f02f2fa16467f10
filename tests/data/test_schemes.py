from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from ner.data.conll import read_conll
from ner.data.labels import read_label_file
from ner.errors import DataFileError
from ner.data.schemes import (
    IGNORE_INDEX,
    build_label_list,
    detect_scheme,
    may_end,
    may_follow,
    may_start,
    split_tag,
    to_iob2,
    transition_tables,
)


@pytest.mark.parametrize(
    "tag, expected",
    [("O", ("O", "")), ("B-PER", ("B", "PER")), ("I-Disease", ("I", "Disease")), ("B", ("B", "")), ("S-X-Y", ("S", "X-Y"))],
)
def test_split_tag(tag, expected):
    assert split_tag(tag) == expected


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["I-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),  # adjacent same-type entities
        (["I-PER", "I-LOC"], ["B-PER", "B-LOC"]),  # type change opens an entity
        (["B-MISC", "O", "B-MISC"], ["B-MISC", "O", "B-MISC"]),  # B after O stays
        (["O", "O"], ["O", "O"]),
    ],
)
def test_to_iob2(tags, expected):
    assert to_iob2(tags) == expected


@pytest.mark.parametrize(
    "sentences, scheme",
    [
        ([["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "B-ORG"]], "IOB1"),
        ([["B-PER", "I-PER", "O", "B-LOC"]], "IOB2"),
        ([["O", "O"]], "IOB2"),
        ([["B-PER", "E-PER", "S-LOC"]], "IOBES"),
        ([["B-PER", "L-PER", "U-LOC"]], "BILOU"),
    ],
)
def test_detect_scheme(sentences, scheme):
    assert detect_scheme(sentences) == scheme


def test_detect_scheme_refuses_mixed_bilou_and_iobes():
    with pytest.raises(ValueError, match="mix BILOU"):
        detect_scheme([["U-PER", "S-LOC"]])


def test_label_list_is_stable_and_complete():
    sentences = [["B-PER", "O"], ["I-LOC"], ["B-ORG", "I-ORG"]]
    assert build_label_list(sentences, "IOB2") == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert build_label_list(reversed(sentences), "IOB2") == build_label_list(sentences, "IOB2")
    assert build_label_list([["S-X"]], "IOBES") == ["O", "B-X", "I-X", "E-X", "S-X"]


def entity_counts(path) -> Counter:
    """Entities per type in a file, counted at IOB2 B- tags after conversion."""
    counts = Counter()
    for sentence in read_conll(path):
        counts.update(split_tag(t)[1] for t in to_iob2(sentence.tags) if t.startswith("B-"))
    return counts


@pytest.mark.integration
@pytest.mark.parametrize(
    "split, loc, misc, org, per",
    [("train", 7140, 3438, 6321, 6600), ("dev", 1837, 922, 1341, 1842), ("test", 1668, 702, 1661, 1617)],
)
def test_conll2003_iob1_to_iob2_matches_official_entity_counts(shared_data, split, loc, misc, org, per):
    path = shared_data / "conll2003" / f"{split}.txt"
    assert detect_scheme(s.tags for s in read_conll(path)) == "IOB1"
    assert entity_counts(path) == Counter(LOC=loc, MISC=misc, ORG=org, PER=per)


@pytest.mark.integration
@pytest.mark.parametrize("split, diseases", [("train", 5134), ("dev", 787), ("test", 960)])
def test_ncbi_disease_is_iob2_and_unchanged(shared_data, split, diseases):
    path = shared_data / "ncbi_disease" / f"{split}.txt"
    sentences = list(read_conll(path))
    assert detect_scheme(s.tags for s in sentences) == "IOB2"
    assert all(to_iob2(s.tags) == s.tags for s in sentences)
    assert entity_counts(path) == Counter(Disease=diseases)


@pytest.mark.parametrize(
    "content, message",
    [
        ("O\nB-PER\nB-PER\n", r"labels\.txt:3: label 'B-PER' repeats line 2"),
        ("O\nPERSON\n", r"labels\.txt:2: label 'PERSON' is not 'O' or PREFIX-TYPE"),
        ("B-PER\nI-PER\n", r"labels\.txt: the label list has no 'O' label"),
    ],
)
def test_bad_label_list_files(tmp_path, content, message):
    path = tmp_path / "labels.txt"
    path.write_text(content)
    with pytest.raises(DataFileError, match=message):
        read_label_file(path)


def test_label_list_file_keeps_its_order(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\ufeffO\n\nB-PER\nI-PER\nB-LOC\nI-LOC\n")
    assert read_label_file(path) == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.mark.parametrize(
    "scheme, previous, current, allowed",
    [
        ("IOB2", "O", "I-PER", False),
        ("IOB2", "B-PER", "I-PER", True),
        ("IOB2", "I-PER", "I-PER", True),
        ("IOB2", "B-LOC", "I-PER", False),
        ("IOB2", "B-PER", "O", True),
        ("IOB2", "I-PER", "B-PER", True),
        ("IOB2", "B", "I", True),  # untyped tags: the empty type matches itself
        ("IOB2", "O", "I", False),
        ("IOBES", "B-PER", "E-PER", True),
        ("IOBES", "B-PER", "O", False),
        ("IOBES", "I-PER", "S-PER", False),
        ("IOBES", "E-PER", "I-PER", False),
        ("IOBES", "E-PER", "B-PER", True),
        ("IOBES", "S-PER", "S-LOC", True),
        ("IOBES", "B-PER", "I-LOC", False),
        ("IOBES", "O", "E-LOC", False),
        ("BILOU", "B-LOC", "L-LOC", True),
        ("BILOU", "I-LOC", "I-LOC", True),
        ("BILOU", "L-LOC", "L-LOC", False),
        ("BILOU", "U-PER", "B-LOC", True),
        ("BILOU", "I-PER", "O", False),
    ],
)
def test_may_follow(scheme, previous, current, allowed):
    assert may_follow(previous, current, scheme) is allowed


@pytest.mark.parametrize(
    "scheme, starts, ends",
    [
        ("IOB2", "O B-X", "O B-X I-X"),
        ("IOBES", "O B-X S-X", "O E-X S-X"),
        ("BILOU", "O B-X U-X", "O L-X U-X"),
    ],
)
def test_may_start_and_end(scheme, starts, ends):
    labels = build_label_list([["B-X"]], scheme)
    assert [label for label in labels if may_start(label, scheme)] == starts.split()
    assert [label for label in labels if may_end(label, scheme)] == ends.split()


def test_transition_tables_read_the_label_list_in_order():
    transitions, start, end = transition_tables(["I-X", "O", "B-X"], "IOB2")
    assert transitions == [[True, True, True], [False, True, True], [True, True, True]]
    assert start == [False, True, True] and end == [True, True, True]


@pytest.mark.parametrize(
    "labels, scheme, message",
    [
        (["O", "B-PER"], "IOB1", "No transition rules for scheme 'IOB1'; use one of IOB2, IOBES, BILOU"),
        (["O", "B-PER", "E-PER"], "IOB2", "'E-PER' does not belong to scheme IOB2"),
        (["O", "U-PER"], "IOBES", "'U-PER' does not belong to scheme IOBES"),
    ],
)
def test_transition_tables_refuse_wrong_scheme(labels, scheme, message):
    with pytest.raises(ValueError, match=message):
        transition_tables(labels, scheme)


def test_ignore_index_is_defined_once_in_tag_rules():
    """-100 is stated in ``ner.tag_rules`` only (``ner.data.schemes`` hands it on), and alignment (tags to sub-token labels) needs neither torch nor the model for it."""
    package = Path(__file__).resolve().parents[2] / "ner"
    defined_in = sorted(
        path.name
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "IGNORE_INDEX" for target in node.targets)
    )
    assert defined_in == ["tag_rules.py"] and IGNORE_INDEX == -100
    tree = ast.parse((package / "data" / "alignment.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not imported & {"torch", "ner.model.modeling"}, imported
