"""One decoding everywhere: fine-tuned folders keep their classifier, scores match the predictor's entities,
word-level decoding with --label_all_tokens, CRF rules only at real sentence edges, decoding inside forward."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from conftest import DEMO_DATA, DEMO_LABELS, make_scaled_classifier_folder
from ner.data.alignment import encode_sentences, tokenize_splits
from ner.data.conll import read_conll
from ner.model.crf import CRF, allowed_transitions, gather_words, scatter_words, word_index_of
from ner.errors import DataFileError
from ner.predict.predictor import NerPredictor
from ner.model.modeling import BertForNer, load_model
from ner.data.schemes import IGNORE_INDEX, continuation_labels, entities
from run_ner import main


def fine_tuned_folder(tiny_bert: Path, folder: Path, labels=DEMO_LABELS, **head) -> Path:
    """A folder as run_ner writes it, whose classifier predicts many, messy entities (I- after O included)."""
    return make_scaled_classifier_folder(tiny_bert, folder, labels, **head)


@pytest.fixture(scope="module")
def linear(demo_model) -> Path:
    """The session's fine-tuned-looking folder over the demo labels: linear head, argmax decoding."""
    return demo_model


@pytest.fixture(scope="module")
def constrained(tiny_bert, tmp_path_factory) -> Path:
    return fine_tuned_folder(tiny_bert, tmp_path_factory.mktemp("constrained") / "model", decoding="constrained")


def predict_only(model: Path, test_file: Path, out: Path, *extra: str) -> dict:
    return main(["--model_name_or_path", str(model), "--test_file", str(test_file), "--output_dir", str(out),
                 "--data_cache_dir", str(out.parent / "cache"), "--do_predict", *extra])


def predicted_column(path: Path) -> list[list[str]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("-DOCSTART-"):
            continue
        if not line:
            if current:
                sentences.append(current)
            current = []
        else:
            current.append(line.split("\t")[2])
    return sentences


def predictor_tags(model: Path, conll_file: Path) -> list[list[str]]:
    predictor = NerPredictor(str(model), device="cpu", batch_size=8)
    return [t.tags for t in predictor.tag([s.words for s in read_conll(conll_file)])]


def rewrite_tags(source: Path, target: Path, mapping: dict[str, str]) -> Path:
    lines = []
    for line in source.read_text(encoding="utf-8").split("\n"):
        word, _, tag = line.partition("\t")
        lines.append(f"{word}\t{mapping.get(tag, tag)}" if tag else line)
    target.write_text("\n".join(lines), encoding="utf-8")
    return target


# --- 1. a fine-tuned folder keeps its classifier ----------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "mapping, warned",
    [
        pytest.param({"B-MISC": "O", "I-MISC": "O"}, None, id="a type fewer"),
        pytest.param({"B-PER": "B-ANIMAL", "I-PER": "I-ANIMAL"}, "ANIMAL", id="a type more"),
    ],
)
def test_reused_folder_keeps_its_classifier_whatever_types_the_file_has(linear, tmp_path, caplog, mapping, warned):
    test_file = rewrite_tags(DEMO_DATA / "test.txt", tmp_path / "test.txt", mapping)
    with caplog.at_level(logging.WARNING):
        results = predict_only(linear, test_file, tmp_path / "out")
    # The trained classifier decided every tag: the same tags as the folder's own predictor gives.
    assert predicted_column(tmp_path / "out" / "predict_predictions.txt") == predictor_tags(linear, test_file)
    assert not [r for r in caplog.records if "initialised anew" in r.getMessage()]
    if warned:
        [warning] = [r.getMessage() for r in caplog.records if "cannot predict" in r.getMessage()]
        count = sum(tag.endswith("-ANIMAL") for sentence in read_conll(test_file) for tag in sentence.tags)
        assert f"{count} ANIMAL" in warning
        assert results["predict_ANIMAL_recall"] == 0.0 and results["predict_ANIMAL_number"] > 0


@pytest.mark.integration
def test_training_a_fine_tuned_folder_on_other_types_needs_new_classifier(linear, tmp_path):
    train = rewrite_tags(DEMO_DATA / "train.txt", tmp_path / "train.txt", {"B-PER": "B-ANIMAL", "I-PER": "I-ANIMAL"})
    args = ["--model_name_or_path", str(linear), "--train_file", str(train), "--output_dir", str(tmp_path / "out"),
            "--data_cache_dir", str(tmp_path / "cache"), "--do_train", "--max_steps", "1", "--save_strategy", "no"]
    with pytest.raises(DataFileError, match=r"train\.txt:\d+: tag 'B-ANIMAL' is not one of the labels .*--new_classifier"):
        main(args)
    main(args + ["--new_classifier"])
    retrained = BertForNer.from_pretrained(tmp_path / "out")
    assert "B-ANIMAL" in retrained.config.label2id and "B-PER" not in retrained.config.label2id


# --- 2. the F1 is the F1 of the predictor's entities -------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("one_torch_thread")
def test_scores_are_those_of_the_entities_the_predictor_returns(tagger, tmp_path):
    test_file = tagger.data / "test.txt"
    results = predict_only(tagger.out, test_file, tmp_path / "out")
    gold = [s.tags for s in read_conll(test_file)]
    predictor = NerPredictor(str(tagger.out), device="cpu", batch_size=8)
    tagged = predictor.tag([s.words for s in read_conll(test_file)])
    correct = found = expected = 0
    for sentence, gold_tags in zip(tagged, gold):
        spans = {(e.start, e.end, e.type) for e in predictor.entities(sentence)}
        offsets, position = [], 0
        for word in sentence.words:
            offsets.append(position)
            position += len(word) + 1
        gold_spans = {(offsets[a], offsets[b - 1] + len(sentence.words[b - 1]), t) for a, b, t in entities(gold_tags)}
        correct, found, expected = correct + len(spans & gold_spans), found + len(spans), expected + len(gold_spans)
    precision, recall = correct / found, correct / expected
    assert correct > 50 and correct < found  # a model that tags, with some mistakes to count
    assert results["predict_precision"] == pytest.approx(precision)
    assert results["predict_recall"] == pytest.approx(recall)
    assert results["predict_f1"] == pytest.approx(2 * precision * recall / (precision + recall))


@pytest.mark.integration
def test_strict_scores_are_kept_beside_the_conlleval_ones(linear, tmp_path):
    from ner.training.metrics import entity_scores

    results = predict_only(linear, DEMO_DATA / "test.txt", tmp_path / "out")
    predicted = predicted_column(tmp_path / "out" / "predict_predictions.txt")
    gold = [s.tags for s in read_conll(DEMO_DATA / "test.txt")]
    opened_by_i = sum(t.startswith("I-") and (i == 0 or s[i - 1][2:] != t[2:]) for s in predicted for i, t in enumerate(s))
    assert opened_by_i > 10  # the two readings of these predictions are not the same entities
    expected = entity_scores(gold, predicted, "IOB2")  # hand-counted in tests/training/test_metrics.py
    for name in ("f1", "precision", "recall", "f1_strict", "precision_strict", "recall_strict"):
        assert results[f"predict_{name}"] == pytest.approx(expected[name]), name


# --- 3. one decoding, at word level, with --label_all_tokens -------------------------------------------


@pytest.mark.integration
def test_label_all_tokens_does_not_change_how_words_are_decoded(constrained, tmp_path):
    predict_only(constrained, DEMO_DATA / "test.txt", tmp_path / "out", "--label_all_tokens")
    ours = predicted_column(tmp_path / "out" / "predict_predictions.txt")
    assert ours == predictor_tags(constrained, DEMO_DATA / "test.txt")
    assert sum(tag != "O" for tags in ours for tag in tags) > 20


def test_continuation_pieces_are_inside_their_entity_in_every_scheme():
    labels = ["O", "B-X", "I-X", "E-X", "S-X", "L-Y", "U-Y", "I-Y"]
    assert [labels[i] for i in continuation_labels(labels)] == ["O", "I-X", "I-X", "I-X", "I-X", "I-Y", "I-Y", "I-Y"]


def test_label_all_tokens_labels_training_data_only(tiny_bert):
    from datasets import Dataset, DatasetDict
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    split = Dataset.from_dict({"words": [["Maria", "Lopez", "went"]], "tags": [["B-PER", "I-PER", "O"]],
                               "document_id": [0], "doc_start": [False], "line": [1]})
    encoded = tokenize_splits(DatasetDict(train=split, validation=split), tokenizer=tokenizer,
                              label_list=["O", "B-PER", "I-PER"], max_seq_length=32, label_all_tokens=True)
    labelled = {name: sum(label != IGNORE_INDEX for label in encoded[name]["labels"][0]) for name in ("train", "validation")}
    assert labelled["validation"] == 3 and labelled["train"] > 3  # "Maria" is several character pieces


def test_label_all_tokens_with_a_crf_is_refused(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="--label_all_tokens does not go with a CRF"):
        main(["--model_name_or_path", str(tiny_bert), "--train_file", str(DEMO_DATA / "train.txt"), "--output_dir",
              str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache"), "--do_train", "--use_crf",
              "--label_all_tokens", "--max_steps", "1"])


# --- 4. the CRF's sentence-edge rules only at real sentence edges ------------------------------------


def test_windows_say_whether_they_hold_the_sentence_edges(tiny_bert):
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    words = [["a"] * 30, ["b", "c"]]
    encoded = encode_sentences(words, tokenizer=tokenizer, max_seq_length=12, stride=2)
    rows = [(s, o, c) for s, o, c in zip(encoded["sentence_index"], encoded["opens_sentence"], encoded["closes_sentence"])]
    first = [r for r in rows if r[0] == 0]
    assert len(first) > 2 and first[0][1:] == (True, False) and first[-1][1:] == (False, True)
    assert all(r[1:] == (False, False) for r in first[1:-1])
    assert [r for r in rows if r[0] == 1] == [(1, True, True)]


def test_a_window_may_open_inside_an_entity():
    labels = ["O", "B-PER", "I-PER"]
    crf = CRF(3, allowed_transitions(labels, "IOB2"))
    emissions = torch.zeros(2, 3, 3)
    emissions[:, 0, 2] = 5.0  # I-PER first
    emissions[:, 1, 2] = 5.0
    tags = torch.tensor([[2, 2, 0], [2, 2, 0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    opens = torch.tensor([False, True])  # row 0 is a window from the middle of a sentence
    nll = crf.neg_log_likelihood(emissions, tags, mask, reduction="none", opens=opens)
    assert nll[0] < 10 and nll[1] > 1000  # a forbidden start only where the sentence really starts
    decoded = crf.decode(emissions, mask, opens=opens)
    assert decoded[0, 0] == 2 and decoded[1, 0] != 2
    closes = torch.tensor([True, False])
    iobes = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    crf = CRF(5, allowed_transitions(iobes, "IOBES"))
    emissions = torch.zeros(2, 2, 5)
    emissions[:, :, 1] = 5.0  # B-PER B-PER: open at the end, fine only where the sentence goes on
    decoded = crf.decode(emissions, torch.ones(2, 2, dtype=torch.bool), closes=closes)
    assert decoded[0, 1] != 1 and decoded[1, 1] == 1


# --- 5, 12. the decoding that was scored is the decoding that is saved, inside forward ------------------


def test_constrained_linear_model_reads_as_stock_emissions_and_decodes_with_its_own_code(constrained):
    import json

    from transformers import AutoModelForTokenClassification, BertForTokenClassification

    saved = json.loads((constrained / "config.json").read_text())
    assert saved["model_type"] == "bert" and "AutoModelForTokenClassification" in saved["auto_map"]
    ids = torch.randint(5, 100, (8, 12))
    starts = torch.ones(8, 12, dtype=torch.bool)
    model = AutoModelForTokenClassification.from_pretrained(constrained, trust_remote_code=True).eval()
    assert type(model).__name__ == "BertForNer" and type(model) is not BertForNer  # the folder's copy of the code
    assert model.config.decoding == "constrained"
    output = model(ids, word_starts=starts)
    assert torch.equal(output.predictions, BertForNer.from_pretrained(constrained).eval()(ids, word_starts=starts).predictions)
    assert not torch.equal(output.predictions, output.emissions.argmax(-1))  # random logits break IOB2 somewhere
    tags = [[model.config.id2label[i] for i in row] for row in output.predictions.tolist()]
    assert all(not t.startswith("I-") or (i and tags_row[i - 1][2:] == t[2:] and tags_row[i - 1] != "O")
               for tags_row in tags for i, t in enumerate(tags_row))
    stock = AutoModelForTokenClassification.from_pretrained(constrained).eval()  # no trust_remote_code: the stock reading
    assert type(stock) is BertForTokenClassification
    torch.testing.assert_close(stock(ids).logits, output.emissions)


def test_forward_decodes_in_eval_mode_with_the_crf_rules_as_buffers(tiny_bert):
    model = load_model(str(tiny_bert), ["O", "B-PER", "I-PER"], head={"use_crf": True}).eval()
    assert {"crf.rules.transitions", "crf.rules.start", "crf.rules.end"} <= dict(model.named_buffers()).keys()
    ids = torch.randint(5, 100, (3, 10))
    starts = torch.rand(3, 10) < 0.6
    opens = torch.tensor([True, False, True])
    output = model(ids, word_starts=starts, opens_sentence=opens)
    index = word_index_of(starts)
    by_words = model.crf.decode(gather_words(output.emissions, index), index >= 0, opens)
    assert torch.equal(output.predictions, scatter_words(by_words, index, starts.shape))
    assert torch.equal(output.logits.argmax(-1)[starts], output.predictions[starts])  # shaped for pipeline()
    assert model.train()(ids).predictions is None  # no decoding while training


def test_a_micro_batch_without_labelled_positions_has_zero_loss_not_nan(tiny_bert):
    model = load_model(str(tiny_bert), ["O", "B-PER", "I-PER"]).train()
    output = model(torch.randint(5, 100, (2, 6)), labels=torch.full((2, 6), IGNORE_INDEX))
    output.loss.backward()
    assert output.loss.item() == 0.0 and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_reloading_a_saved_model_does_not_warn_about_model_types(tiny_bert, linear, tmp_path, caplog):
    folders = [linear, fine_tuned_folder(tiny_bert, tmp_path / "crf", use_crf=True),
               fine_tuned_folder(tiny_bert, tmp_path / "mlp", head_layers=2)]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for folder in folders:
            BertForNer.from_pretrained(folder)
            load_model(str(folder), DEMO_LABELS)
            NerPredictor(str(folder), device="cpu")
    assert not [r for r in caplog.records if "to instantiate a model of type" in r.getMessage()]


@pytest.mark.parametrize(
    "head, own_code",
    [({}, False), ({"head_layers": 2}, True), ({"decoding": "constrained"}, True), ({"use_crf": True}, True)],
)
def test_model_card_gives_the_decoding_that_was_scored_and_how_to_load_it(tmp_path, head, own_code):
    from ner.outputs.model_card import CardData, write_model_card
    from ner.outputs.results import Results

    metrics = {"eval_f1": 0.5, "eval_number": 3}
    if "decoding" in head or "use_crf" in head:
        metrics["eval_plain_f1"] = 0.4375  # what plain transformers' argmax gives
    text = write_model_card(
        tmp_path,
        CardData(base_model="bert-base-cased", data_files={"train": "train.txt"}, trained=True, label_list=DEMO_LABELS,
                 scheme="IOB2", hyperparameters={"head_layers": 1, "use_crf": False, "decoding": "argmax", **head}),
        Results.from_metrics(metrics),
    ).read_text(encoding="utf-8")
    usage = text.split("## Usage", 1)[1].split("\n## ", 1)[0]
    assert 'pipeline("token-classification"' in usage
    assert ("trust_remote_code=True" in usage) is own_code
    assert ("NerPredictor" in usage) is own_code
    assert "import ner" not in usage  # the folder loads without this package
    if "eval_plain_f1" in metrics:
        assert "dev F1 0.4375 (with its decoding 0.5000)" in usage
        assert "argmax of the emissions, without this model's decoding): F1 0.4375" in text
    if head.get("head_layers") == 2:
        assert "plain transformers refuses the folder" in usage


def test_an_unpredictable_tag_in_a_json_file_is_named_at_its_record(linear, tmp_path):
    import json

    rows = [{"tokens": ["Maria", "went"], "ner_tags": ["B-PER", "O"]},
            {"tokens": ["to", "the", "zoo"], "ner_tags": ["O", "O", "B-ANIMAL"]}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(DataFileError, match=r"train\.jsonl:2: tag 'B-ANIMAL' \(word 3\) is not one of the labels"):
        main(["--model_name_or_path", str(linear), "--train_file", str(train), "--output_dir", str(tmp_path / "out"),
              "--data_cache_dir", str(tmp_path / "cache"), "--do_train", "--max_steps", "1"])
