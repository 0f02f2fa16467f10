from __future__ import annotations

from collections import Counter

import pytest

from ner.conll import read_conll
from ner.errors import DataFileError
from ner.schemes import build_label_list, detect_scheme, read_label_file, split_tag, to_iob2


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


@pytest.mark.parametrize(
    "split, loc, misc, org, per",
    [("train", 7140, 3438, 6321, 6600), ("dev", 1837, 922, 1341, 1842), ("test", 1668, 702, 1661, 1617)],
)
def test_conll2003_iob1_to_iob2_matches_official_entity_counts(shared_data, split, loc, misc, org, per):
    path = shared_data / "conll2003" / f"{split}.txt"
    assert detect_scheme(s.tags for s in read_conll(path)) == "IOB1"
    assert entity_counts(path) == Counter(LOC=loc, MISC=misc, ORG=org, PER=per)


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
