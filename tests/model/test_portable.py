"""Output folders that plain transformers loads without this package: stock reading, trust_remote_code, refusals.

Each check runs in a subprocess started in an empty folder with no PYTHONPATH, so ``ner`` cannot be imported
there (the script asserts it): what a user has who was sent the folder, or pulled it from the Hub.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import make_tiny_bert, torch_threads
from ner.data.conll import read_conll
from ner.model.modeling import REMOTE_CODE_FILES
from ner.outputs.publishing import REMOTE_TOKENIZER

pytestmark = pytest.mark.integration

WITHOUT_NER = """
import importlib.util, json, sys
assert importlib.util.find_spec("ner") is None, "ner must not be importable here"
import transformers
transformers.logging.set_verbosity_error()
"""


def run_without_ner(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TOKENIZERS_PARALLELISM="false")
    scratch = tmp_path / "empty"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_NER + textwrap.dedent(script), *args],
        cwd=scratch, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )


class CrfTagger(NamedTuple):
    out: Path
    data: Path
    results: dict[str, float]


@pytest.fixture(scope="session")
def crf_tagger(tmp_path_factory) -> CrfTagger:
    """The session tagger's corpus and recipe with the default head (a CRF): a folder that finds real entities."""
    from run_ner import main
    from tagger_data import VOCABULARY, training_args, write_corpus

    root = tmp_path_factory.mktemp("crf-tagger")
    write_corpus(root / "data")
    base = make_tiny_bert(root / "tiny-bert", extra_words=VOCABULARY, dropout=0.0, seed=0)
    argv = training_args(base, root / "data", root / "out")
    argv = argv[: argv.index("--use_crf")]  # the defaults: a new head is a CRF
    with torch_threads(1):
        results = main(argv)
    assert results["eval_f1"] >= 0.9, results
    return CrfTagger(root / "out", root / "data", results)


def test_a_crf_folder_carries_its_code_and_names_it(crf_tagger):
    config = json.loads((crf_tagger.out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["use_crf"] is True
    assert config["auto_map"] == {"AutoConfig": "configuration.NerBertConfig", "AutoModelForTokenClassification": "modeling.BertForNer"}
    tokenizer = json.loads((crf_tagger.out / "tokenizer_config.json").read_text())
    assert tokenizer["auto_map"] == {"AutoTokenizer": REMOTE_TOKENIZER}
    for name in ("configuration.py", "modeling.py", "crf.py", "tag_rules.py", "tokenization_ner.py"):
        assert (crf_tagger.out / name).is_file()
    # The copies import each other relatively and nothing of ner.
    for name in ("configuration.py", "modeling.py", "crf.py", "tag_rules.py", "tokenization_ner.py"):
        tree = ast.parse((crf_tagger.out / name).read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level}
        modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {module for module in modules if module == "ner" or module.startswith("ner.")}, name
        relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
        assert {f"{module}.py" for module in relative} <= set(REMOTE_CODE_FILES), name


def test_plain_transformers_reads_a_crf_folder_as_a_stock_classifier_over_its_emissions(crf_tagger, tmp_path):
    script = """
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, BertForTokenClassification, pipeline
    folder = sys.argv[1]
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    assert type(model) is BertForTokenClassification, type(model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(["jordan said the deal was good ."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    ner = pipeline("token-classification", model=folder, aggregation_strategy="first")
    print(json.dumps({"logits": logits[0].tolist(), "entities": ner("jordan said the deal was good .")}, default=float))
    """
    result = run_without_ner(script, tmp_path, str(crf_tagger.out))
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert [entity["entity_group"] for entity in output["entities"]] == ["PER"]  # it tags text

    import torch
    from transformers import AutoTokenizer

    from ner.model.modeling import BertForNer

    model = BertForNer.from_pretrained(crf_tagger.out).eval()
    inputs = AutoTokenizer.from_pretrained(crf_tagger.out)(["jordan said the deal was good ."], return_tensors="pt")
    with torch.no_grad():
        emissions = model(**inputs).emissions
    torch.testing.assert_close(torch.tensor(output["logits"]), emissions[0])  # the same emissions


def test_trust_remote_code_pipeline_gives_the_entities_of_ner_predict(crf_tagger, tmp_path):
    """The folder's own code (CRF decoding) through pipeline(): its entities equal python -m ner predict's, exactly,
    on a file where the model finds hundreds of entities."""
    sentences = [sentence.words for sentence in read_conll(crf_tagger.data / "train.txt")][:400]
    source = tmp_path / "input.txt"
    source.write_text("\n\n".join("\n".join(words) for words in sentences) + "\n", encoding="utf-8")
    predicted = tmp_path / "predicted.jsonl"
    subprocess.run(
        [sys.executable, "-m", "ner", "predict", "--model", str(crf_tagger.out), "--input", str(source),
         "--input_format", "conll", "--output_format", "jsonl", "--output", str(predicted), "--device", "cpu"],
        check=True, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600,
    )
    ours = [[(e["type"], e["start"], e["end"]) for e in json.loads(line)["entities"]] for line in predicted.read_text().splitlines()]
    assert sum(map(len, ours)) >= 100

    script = """
    from transformers import pipeline
    folder, sentences = sys.argv[1], json.load(open(sys.argv[2]))
    ner = pipeline("token-classification", model=folder, trust_remote_code=True, aggregation_strategy="first")
    assert type(ner.model).__name__ == "BertForNer" and type(ner.tokenizer).__name__ == "NerTokenizerFast"
    # A list of words is one pre-split sentence (a batch of one): its entities come back in a list of one.
    found = [[(e["entity_group"], e["start"], e["end"]) for e in ner(words, is_split_into_words=True)[0]] for words in sentences]
    simple = pipeline("token-classification", model=folder, trust_remote_code=True, aggregation_strategy="simple")
    grouped = [[(e["entity_group"], e["start"], e["end"]) for e in simple(words, is_split_into_words=True)[0]] for words in sentences]
    print(json.dumps({"first": found, "simple": grouped}))
    """
    words_file = tmp_path / "words.json"
    words_file.write_text(json.dumps(sentences))
    result = run_without_ner(script, tmp_path, str(crf_tagger.out), str(words_file))
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    theirs = [[tuple(entity) for entity in sentence] for sentence in output["first"]]
    assert theirs == ours
    assert [[tuple(entity) for entity in sentence] for sentence in output["simple"]] == ours


def test_an_mlp_folder_is_refused_by_plain_transformers_with_how_to_load_it(tiny_bert, tmp_path):
    from ner.model.modeling import load_model

    folder = tmp_path / "mlp"
    load_model(str(tiny_bert), ["O", "B-PER", "I-PER"], head={"head_layers": 2}).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "ner_bert"
    script = """
    from transformers import AutoModelForTokenClassification
    try:
        AutoModelForTokenClassification.from_pretrained(sys.argv[1])
    except ValueError as error:
        print(json.dumps({"refused": str(error)}))
    else:
        print(json.dumps({"loaded": True}))
    model = AutoModelForTokenClassification.from_pretrained(sys.argv[1], trust_remote_code=True)
    print(json.dumps({"remote": type(model).__name__, "layers": model.config.head_layers}))
    """
    result = run_without_ner(script, tmp_path, str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    # With no terminal, transformers' prompt ("Do you wish to run the custom code?") gets no answer: it refuses.
    refused, remote = (json.loads(line[line.index("{"):]) for line in result.stdout.strip().splitlines()[-2:])
    assert "trust_remote_code=True" in refused["refused"]
    assert remote == {"remote": "BertForNer", "layers": 2}


def test_push_to_hub_uploads_the_code_a_crf_folder_needs(tiny_bert, tmp_path):
    from conftest import DEMO_DATA, FAKE_TOKEN, run_and_push

    _, calls, _ = run_and_push([
        "--model_name_or_path", str(tiny_bert), "--train_file", str(DEMO_DATA / "train.txt"),
        "--validation_file", str(DEMO_DATA / "dev.txt"), "--output_dir", str(tmp_path / "out"),
        "--data_cache_dir", str(tmp_path / "cache"), "--do_train", "--do_eval", "--num_train_epochs", "1",
        "--max_train_samples", "32", "--save_strategy", "no", "--report_to", "none",
        "--push_to_hub", "--hub_model_id", "someone/tiny-crf", "--hub_token", FAKE_TOKEN,
    ])
    assert set(REMOTE_CODE_FILES) <= set(calls["uploaded"])
    assert {"config.json", "tokenizer_config.json", "model.safetensors", "README.md"} <= set(calls["uploaded"])
    assert json.loads(calls["contents"]["tokenizer_config.json"])["auto_map"] == {"AutoTokenizer": REMOTE_TOKENIZER}
    card = calls["contents"]["README.md"].decode()
    assert "trust_remote_code=True" in card and "Read by plain transformers" in card
