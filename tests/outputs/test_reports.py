from __future__ import annotations

import json
import re

import pytest

from ner.training.metrics import entity_scores
from ner.outputs.reports import entity_confusion, mark_entities, top_confusions, write_split_report
from ner.outputs.results import TEST, VALIDATION, SplitScores

TYPES = ("LOC", "ORG", "PER")


def confusion_of(gold, predicted):
    """The non-zero cells only, as {(row, column): count} (one entity reading serves every scheme)."""
    table = entity_confusion(gold, predicted)
    return {(row, column): n for row, cells in table.items() for column, n in cells.items() if n}


@pytest.mark.parametrize(
    "gold, predicted, expected",
    [
        pytest.param(["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], {("PER", "PER"): 1}, id="correct"),
        pytest.param(["B-PER", "I-PER", "O"], ["B-ORG", "I-ORG", "O"], {("PER", "ORG"): 1}, id="wrong-type"),
        pytest.param(["B-LOC", "O", "O"], ["O", "O", "O"], {("LOC", "missed"): 1}, id="missed"),
        pytest.param(["O", "O", "O"], ["O", "B-ORG", "O"], {("spurious", "ORG"): 1}, id="spurious"),
        pytest.param(
            ["B-LOC", "I-LOC", "O"], ["B-LOC", "O", "O"], {("LOC", "missed"): 1, ("spurious", "LOC"): 1}, id="boundary"
        ),
        pytest.param(
            ["B-LOC", "I-LOC", "O"],
            ["B-ORG", "I-ORG", "B-ORG"],
            {("LOC", "ORG"): 1, ("spurious", "ORG"): 1},
            id="type+extra",
        ),
        # conlleval: an entity opened by I- is an entity, exactly as the F1 scores it.
        pytest.param(["B-PER", "I-PER", "O"], ["I-PER", "I-PER", "O"], {("PER", "PER"): 1}, id="opened-by-i"),
        pytest.param(["B-PER", "I-PER", "O"], ["O", "I-PER", "O"], {("PER", "missed"): 1, ("spurious", "PER"): 1}, id="i-after-o"),
    ],
)
def test_confusion_counts(gold, predicted, expected):
    assert confusion_of([gold], [predicted]) == expected


def test_confusion_table_is_complete_and_agrees_with_the_scores():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"], ["B-LOC", "I-LOC", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"], ["B-LOC", "O", "B-PER"]]
    table = entity_confusion(gold, predicted)
    assert list(table) == [*TYPES, "spurious"]
    assert all(list(table[t]) == [*TYPES, "missed"] for t in TYPES)
    assert list(table["spurious"]) == list(TYPES)
    scores = entity_scores(gold, predicted, "IOB2")
    for entity_type in TYPES:
        assert sum(table[entity_type].values()) == scores[f"{entity_type}_number"]  # every gold entity once
        true_positives = table[entity_type][entity_type]
        predicted_count = sum(table[row][entity_type] for row in table)  # every predicted entity once
        assert true_positives / predicted_count == pytest.approx(scores[f"{entity_type}_precision"])
    assert top_confusions(table) == [
        {"gold": "LOC", "predicted": "ORG", "count": 1},
        {"gold": "LOC", "predicted": "missed", "count": 1},
        {"gold": "PER", "predicted": "missed", "count": 1},
        {"gold": "spurious", "predicted": "LOC", "count": 1},
        {"gold": "spurious", "predicted": "PER", "count": 1},
    ]


@pytest.mark.parametrize(
    "scheme, gold, predicted, expected",
    [
        ("IOBES", ["S-PER", "B-LOC", "E-LOC"], ["S-ORG", "B-LOC", "E-LOC"], {("PER", "ORG"): 1, ("LOC", "LOC"): 1}),
        # An unclosed IOBES entity still reads as one (conlleval), on the same span here.
        ("IOBES", ["B-LOC", "E-LOC", "O"], ["B-LOC", "I-LOC", "O"], {("LOC", "LOC"): 1}),
        ("IOBES", ["B-LOC", "E-LOC", "O"], ["B-LOC", "I-LOC", "I-LOC"], {("LOC", "missed"): 1, ("spurious", "LOC"): 1}),
        (
            "BILOU",
            ["U-PER", "B-LOC", "L-LOC"],
            ["U-PER", "U-LOC", "U-LOC"],
            {("PER", "PER"): 1, ("LOC", "missed"): 1, ("spurious", "LOC"): 2},
        ),
    ],
)
def test_confusion_follows_the_scheme(scheme, gold, predicted, expected):
    assert confusion_of([gold], [predicted]) == expected


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="same sentences and lengths"):
        entity_confusion([["O", "O"]], [["O"]])


def test_mark_entities():
    words = ["Maria", "Lopez", "visited", "New", "York"]
    assert mark_entities(words, [(0, 2, "PER"), (3, 5, "LOC")]) == "[PER Maria Lopez] visited [LOC New York]"


def table_rows(markdown: str, header: str) -> dict[str, list[str]]:
    """The first markdown table under ``header``: first cell -> the other cells (header row left out)."""
    lines = markdown.split(header, 1)[1].splitlines()
    first = next(number for number, line in enumerate(lines) if line.startswith("|"))
    rows: dict[str, list[str]] = {}
    for line in lines[first + 2 :]:  # after the header and the --- line
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_write_split_report(tmp_path):
    words = [["Maria", "Lopez", "visited", "Paris", "."], ["IBM", "hired", "John", "in", "New", "York"], ["Hi", "."]]
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "B-PER", "O", "B-LOC", "I-LOC"], ["O", "O"]]
    predicted = [["B-ORG", "I-ORG", "O", "O", "O"], ["B-ORG", "O", "B-PER", "O", "B-LOC", "O"], ["O", "O"]]
    metrics = {f"eval_{key}": value for key, value in entity_scores(gold, predicted, "IOB2").items()}
    metrics["eval_runtime"] = 0.5

    paths = write_split_report(tmp_path, SplitScores.from_metrics(metrics, VALIDATION), words, gold, predicted, "IOB2")

    assert paths == [tmp_path / name for name in ("eval_report.md", "eval_report.json", "eval_mistakes.md", "eval_mistakes.json")]
    markdown_path, json_path, mistakes_path, mistakes_json = paths
    markdown = markdown_path.read_text(encoding="utf-8")
    rows = table_rows(markdown, "## Scores by entity type")
    assert list(rows) == ["LOC", "ORG", "PER", "**overall (micro)**"]
    for entity_type in TYPES:
        precision, recall, f1, support = rows[entity_type]
        assert float(precision) == round(metrics[f"eval_{entity_type}_precision"], 4)
        assert float(recall) == round(metrics[f"eval_{entity_type}_recall"], 4)
        assert float(f1) == round(metrics[f"eval_{entity_type}_f1"], 4)
        assert int(support) == metrics[f"eval_{entity_type}_number"]
    assert [float(x) for x in rows["**overall (micro)**"][:3]] == [
        round(metrics[f"eval_{name}"], 4) for name in ("precision", "recall", "f1")
    ]
    confusions = table_rows(markdown, "## Top confusions")
    assert confusions == {"LOC": ["missed", "2"], "PER": ["ORG", "1"], "spurious": ["LOC", "1"]}
    assert "2 of 3 sentences have an entity error; `eval_mistakes.md` shows" in markdown
    # The report names entity types only; the mistakes file quotes the sentences.
    assert not any(word in markdown + json_path.read_text() for word in ("Maria", "Paris", "IBM", "John", "York"))
    mistakes = mistakes_path.read_text(encoding="utf-8")
    assert "gold:      [PER Maria Lopez] visited [LOC Paris] ." in mistakes
    assert "predicted: [ORG Maria Lopez] visited Paris ." in mistakes
    assert "predicted: [ORG IBM] hired [PER John] in [LOC New] York" in mistakes
    assert "2 of 3 sentences have an entity error" in mistakes

    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["confusion"] == entity_confusion(gold, predicted)
    assert report["per_type"]["PER"] == {"precision": 1.0, "recall": 0.5, "f1": metrics["eval_PER_f1"], "support": 2}
    assert report["overall"]["f1"] == metrics["eval_f1"]
    mistakes = json.loads(mistakes_json.read_text(encoding="utf-8"))["mistakes"]
    assert [m["index"] for m in mistakes] == [0, 1]
    assert mistakes[0]["predicted_entities"] == [{"type": "ORG", "start": 0, "end": 2, "text": "Maria Lopez"}]
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_shows_at_most_ten_mistakes_and_fences_backticks(tmp_path):
    words = [["```", "x"]] * 12
    gold = [["B-PER", "O"]] * 12
    predicted = [["O", "O"]] * 12
    metrics = {f"predict_{k}": v for k, v in entity_scores(gold, predicted, "IOB2").items()}
    scores = SplitScores.from_metrics(metrics, TEST)
    report_path, _, markdown_path, json_path = write_split_report(tmp_path, scores, words, gold, predicted, "IOB2")
    assert report_path.read_text(encoding="utf-8").startswith("# Entity report: test")
    markdown = markdown_path.read_text(encoding="utf-8")
    assert markdown.startswith("# Mistakes in context: test")
    assert len(json.loads(json_path.read_text())["mistakes"]) == 10
    assert len(re.findall(r"^````text$", markdown, flags=re.M)) == 10  # fence longer than the word's backticks


def test_report_refuses_words_that_do_not_match_the_tags(tmp_path):
    with pytest.raises(ValueError, match="words and tags"):
        write_split_report(tmp_path, SplitScores.from_metrics({}, VALIDATION), [["a"]], [["O", "O"]], [["O", "O"]], "IOB2")
