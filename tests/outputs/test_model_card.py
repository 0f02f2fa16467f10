from __future__ import annotations

import json

import pytest
import yaml

from ner.outputs.model_card import CardData, is_hub_id, write_model_card
from ner.outputs.results import VALIDATION, Results, SplitScores

FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
RESULTS = {
    "train_loss": 0.31,
    "eval_f1": 0.8123, "eval_precision": 0.8, "eval_recall": 0.825, "eval_accuracy": 0.95, "eval_number": 40,
    "eval_f1_strict": 0.7777, "eval_precision_strict": 0.76, "eval_recall_strict": 0.7961,
    "eval_LOC_f1": 0.7, "eval_LOC_precision": 0.65, "eval_LOC_recall": 0.7583, "eval_LOC_number": 24,
    "eval_PER_f1": 0.9, "eval_PER_precision": 0.95, "eval_PER_recall": 0.855, "eval_PER_number": 16,
    "eval_runtime": 1.5,
    "predict_f1": 0.7011, "predict_precision": 0.7, "predict_recall": 0.7022, "predict_accuracy": 0.93,
    "predict_number": 45,
    "predict_f1_strict": 0.6511, "predict_precision_strict": 0.65, "predict_recall_strict": 0.6522,
    "predict_LOC_f1": 0.6, "predict_LOC_precision": 0.6, "predict_LOC_recall": 0.6, "predict_LOC_number": 25,
    "predict_PER_f1": 0.8, "predict_PER_precision": 0.8, "predict_PER_recall": 0.8, "predict_PER_number": 20,
}
HYPERPARAMETERS = {
    "learning_rate": 5e-05, "num_train_epochs": 3, "per_device_train_batch_size": 32, "seed": 42,
    "hub_token": FAKE_TOKEN, "token": FAKE_TOKEN,
    "accelerator_config": {"auth_token": FAKE_TOKEN, "split_batches": False},
}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    header, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(header)


def table(text: str, heading: str) -> dict[str, list[str]]:
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("type", "name") and not set(cells[0]) <= {"-", ":", " "}:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def card(tmp_path):
    (tmp_path / "all_results.json").write_text(json.dumps(RESULTS))
    path = write_model_card(
        tmp_path,
        CardData(
            base_model="bert-base-cased",
            data_files={"train": "conll2003", "validation": "conll2003", "test": "conll2003"},
            trained=True,
            label_list=LABELS,
            scheme="IOB2",
            hyperparameters=HYPERPARAMETERS,
            model_name="someone/bert-ner",
        ),
        Results.from_metrics(json.loads((tmp_path / "all_results.json").read_text())),
        plots=["eval_confusion.png", str(tmp_path / "plots" / "training_curves.png")],
    )
    assert path == tmp_path / "README.md"
    return path.read_text(encoding="utf-8")


def test_front_matter_parses_with_the_model_index(card):
    metadata = front_matter(card)
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "token-classification"
    assert metadata["base_model"] == "bert-base-cased"
    assert metadata["datasets"] == ["conll2003"]
    assert "ner" in metadata["tags"]
    (entry,) = metadata["model-index"]
    assert entry["name"] == "someone/bert-ner"
    by_split = {result["dataset"]["split"]: result for result in entry["results"]}
    assert set(by_split) == {"validation", "test"}
    for split, prefix in (("validation", "eval"), ("test", "predict")):
        assert by_split[split]["task"]["type"] == "token-classification"
        values = {metric["type"]: metric["value"] for metric in by_split[split]["metrics"]}
        names = ("f1", "precision", "recall", "f1_strict", "accuracy")
        assert values == {name: RESULTS[f"{prefix}_{name}"] for name in names}
        labels = {metric["type"]: metric["name"] for metric in by_split[split]["metrics"]}
        assert labels["f1"] == "F1 (conlleval-compatible, entity level)"
        assert labels["f1_strict"] == "F1 (seqeval strict, entity level)"


def test_huggingface_hub_reads_the_card(tmp_path, card):
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    loaded = ModelCard.load(tmp_path / "README.md")  # raises on an invalid model-index
    f1 = {r.dataset_split: r.metric_value for r in loaded.data.eval_results if r.metric_type == "f1"}
    assert f1 == {"validation": RESULTS["eval_f1"], "test": RESULTS["predict_f1"]}
    name, results = model_index_to_eval_results(metadata_load(tmp_path / "README.md")["model-index"])
    assert name == "someone/bert-ner" and len(results) == 10


@pytest.mark.parametrize("heading, prefix", [("### Validation (dev)", "eval"), ("### Test", "predict")])
def test_per_type_table_matches_the_results(card, heading, prefix):
    rows = table(card, heading)
    assert list(rows) == ["LOC", "PER", "**overall (micro)**"]
    for entity_type in ("LOC", "PER"):
        precision, recall, f1, support = rows[entity_type]
        assert float(precision) == round(RESULTS[f"{prefix}_{entity_type}_precision"], 4)
        assert float(recall) == round(RESULTS[f"{prefix}_{entity_type}_recall"], 4)
        assert float(f1) == round(RESULTS[f"{prefix}_{entity_type}_f1"], 4)
        assert int(support) == RESULTS[f"{prefix}_{entity_type}_number"]
    assert float(rows["**overall (micro)**"][2]) == round(RESULTS[f"{prefix}_f1"], 4)
    assert int(rows["**overall (micro)**"][3]) == RESULTS[f"{prefix}_number"]
    section = card.split(heading, 1)[1].split("\n#", 1)[0]
    assert f"Strict F1 (seqeval strict, IOB2): {RESULTS[f'{prefix}_f1_strict']:.4f}." in section


def test_scores_are_called_conlleval_compatible_and_strict_keys_are_no_entity_type(card):
    assert "conlleval-compatible" in card and "(an entity opened by `I-` counts)" in card
    assert "strict matching" not in card
    assert list(SplitScores.from_metrics(RESULTS, VALIDATION).per_type) == ["LOC", "PER"]
    assert "| strict |" not in card and "| f1 |" not in card


def test_body_has_labels_usage_hyperparameters_and_plots(card):
    assert "Tag scheme **IOB2**" in card and "`B-LOC` `I-LOC`" in card
    assert 'pipeline("token-classification", model="someone/bert-ner", aggregation_strategy="first")' in card
    hyperparameters = table(card, "## Training hyperparameters")
    assert hyperparameters["learning_rate"] == ["5e-05"] and hyperparameters["seed"] == ["42"]
    assert hyperparameters["accelerator_config"] == ['{"split_batches": false}']
    assert "![eval confusion](eval_confusion.png)" in card
    assert "![training curves](plots/training_curves.png)" in card


def test_no_token_is_written(card):
    assert FAKE_TOKEN not in card
    assert "hub_token" not in card and "auth_token" not in card


def test_local_model_and_files_stay_out_of_the_metadata(tmp_path):
    model = tmp_path / "models" / "my-bert"
    model.mkdir(parents=True)
    data = tmp_path / "corpus" / "dev.txt"
    data.parent.mkdir()
    data.write_text("x O\n")
    path = write_model_card(
        tmp_path / "out",
        CardData(
            base_model=str(model),
            data_files={"validation": str(data)},
            trained=True,
            label_list=["O", "S-PER", "B-PER", "E-PER", "I-PER"],
            scheme="IOBES",
        ),
        Results.from_metrics({"eval_f1": 0.5}),
    )
    text = path.read_text()
    metadata = front_matter(text)
    assert "base_model" not in metadata and "datasets" not in metadata
    (entry,) = metadata["model-index"]
    assert entry["name"] == "out"
    assert entry["results"][0]["dataset"] == {"name": "corpus", "type": "corpus", "split": "validation"}
    assert str(tmp_path) not in text  # no path of this machine
    assert "`models/my-bert` (a local model)" in text and "`corpus/dev.txt`" in text
    assert 'aggregation_strategy="none"' in text  # IOBES labels: the pipeline's grouping does not apply


def test_card_without_results_has_no_model_index(tmp_path):
    path = write_model_card(
        tmp_path, CardData(base_model="bert-base-cased", trained=True, label_list=["O"], scheme="IOB2"),
        Results.from_metrics({}),
    )
    metadata = front_matter(path.read_text())
    assert "model-index" not in metadata
    assert "No evaluation results were recorded." in path.read_text()


@pytest.mark.parametrize(
    "name, expected",
    [("bert-base-cased", True), ("dslim/bert-base-NER", True), ("/tmp/model", False), ("./model", False),
     ("a/b/c", False), ("data/train.txt", False), ("conll2003", True)],
)
def test_is_hub_id(name, expected):
    assert is_hub_id(name) is expected


def test_each_file_is_named_for_what_it_was_used_for(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}
    files = {split: corpus / name for split, name in names.items()}
    for path in files.values():
        path.write_text("x O\n")
    path = write_model_card(
        tmp_path / "out",
        CardData(base_model="bert-base-cased", data_files={k: str(v) for k, v in files.items()}, trained=True,
                 label_list=LABELS, scheme="IOB2", hyperparameters={"learning_rate": 5e-05}),
        Results.from_metrics(RESULTS),
    )
    text = path.read_text()
    assert (
        "fine-tuned from [bert-base-cased](https://huggingface.co/bert-base-cased) on `corpus/train.txt`; "
        "evaluated on `corpus/dev.txt` (validation) and `corpus/test.txt` (test)." in text
    )
    assert "## Training hyperparameters" in text


def test_hub_dataset_metadata_lists_only_the_training_data(tmp_path):
    path = write_model_card(
        tmp_path,
        CardData(base_model="bert-base-cased", data_files={"train": "conll2003", "validation": "other/dev-set"},
                 trained=True, label_list=LABELS, scheme="IOB2"),
        Results.from_metrics({"eval_f1": 0.5}),
    )
    text = path.read_text()
    metadata = front_matter(text)
    assert metadata["datasets"] == ["conll2003"]
    assert metadata["model-index"][0]["results"][0]["dataset"] == {
        "name": "other/dev-set", "type": "other/dev-set", "split": "validation"
    }
    assert "on the `train` split of [conll2003](https://huggingface.co/datasets/conll2003); evaluated on the " \
        "`validation` split of [other/dev-set](https://huggingface.co/datasets/other/dev-set)." in text


def test_predict_only_card_says_the_model_was_not_trained(tmp_path):
    path = write_model_card(
        tmp_path,
        CardData(base_model="dslim/bert-base-NER", data_files={"validation": "conll2003", "test": "conll2003"},
                 trained=False, label_list=LABELS, scheme="IOB2", hyperparameters={"max_seq_length": 128}),
        Results.from_metrics(RESULTS),
    )
    text = path.read_text()
    metadata = front_matter(text)
    assert "datasets" not in metadata  # nothing was trained on
    assert {r["dataset"]["split"] for r in metadata["model-index"][0]["results"]} == {"validation", "test"}
    assert "fine-tuned" not in text
    assert "evaluated on the `validation` split of [conll2003]" in text
    assert "and the `test` split of [conll2003]" in text
    assert "The model was not trained in this run; its weights are the base model's, [dslim/bert-base-NER]" in text
    assert "## Evaluation settings" in text and "## Training hyperparameters" not in text


@pytest.mark.parametrize("on_hub", [False, True])
def test_card_says_whether_evaluation_sentences_are_uploaded(tmp_path, on_hub):
    path = write_model_card(
        tmp_path,
        CardData(base_model="bert-base-cased", data_files={"validation": "conll2003"}, trained=False,
                 label_list=LABELS, scheme="IOB2", eval_text_on_hub=on_hub),
        Results.from_metrics(RESULTS),
    )
    section = path.read_text().split("### Evaluation data", 1)[1].split("\n#", 1)[0]
    assert "quote sentences of the evaluation data" in section
    if on_hub:
        assert "they are uploaded with the model (`--push_eval_text`)" in section
    else:
        assert "so they stay off the Hub; `--push_eval_text` uploads them" in section
