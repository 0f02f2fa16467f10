"""``python -m ner export`` (ner/predict/export.py, ner/predict/onnx.py): ONNX Runtime folders for every head and decoding of the session's
trained tagger, the parity gate, int8, damaged graphs, and prediction through the exported folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ner.errors import run_cli
from ner.model.modeling import load_model
from ner.predict import cli
from ner.predict.export import export_folder
from ner.predict.onnx import ONNX_FILE
from ner.predict.predictor import NerPredictor

TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# Heads made from the tagger's trained encoder and classifier (a linear head, trained with token cross-entropy);
# the CRF's transitions and the MLP's hidden layer start random, so their tags are messier but their own.
VARIANTS = {
    "linear": {},
    "constrained": {"decoding": "constrained"},
    "crf": {"use_crf": True},
    "mlp": {"head_layers": 2},
    "context": {"context_size": 8},
}


@pytest.fixture(scope="module")
def heads(tagger, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("heads")
    labels = [json.loads((tagger.out / "config.json").read_text())["id2label"][str(i)] for i in range(5)]
    folders = {}
    for name, head in VARIANTS.items():
        folder = root / name
        load_model(str(tagger.out), labels, head=head).save_pretrained(folder)
        for file in TOKENIZER:
            if (tagger.out / file).is_file():
                shutil.copy(tagger.out / file, folder / file)
        folders[name] = folder
    return folders


@pytest.mark.integration  # exports and tags with the session's trained tagger
@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_head_exports_and_tags_as_pytorch_does(heads, tagger, tmp_path, name):
    out = tmp_path / f"{name}-onnx"
    dev = tagger.data / "dev.txt"
    report = export_folder(str(heads[name]), str(out), check_file=str(dev))
    assert report["agreement"] == 1.0 and abs(report["f1_drop"]) <= 0.001, report
    # A tagger that finds the entities, not two all-O runs (context it was not trained with costs it some).
    assert report["f1_onnx"] >= {"linear": 0.8, "constrained": 0.8, "context": 0.5}.get(name, 0.0), report
    assert json.loads((out / "export.json").read_text()) == report
    # The graph's emissions are the model's, on a padded batch of unequal lengths (the tags above can hide an error
    # that moves no argmax).
    import numpy as np
    import torch

    pytorch, onnx = NerPredictor(str(heads[name])), NerPredictor(str(out))
    batch = pytorch.tokenizer(["ada visited the city of rome", "hello"], padding=True, return_tensors="np")
    with torch.no_grad():
        expected = pytorch.model.emissions(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
    (found,) = onnx.onnx.session.run(["emissions"], {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    mask = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(found[mask], expected.numpy()[mask], atol=1e-4)
    assert "equal PyTorch float32's" in (out / "README.md").read_text()
    # The command on the exported folder writes what it writes with the PyTorch folder: the same CoNLL file byte for
    # byte, the same JSON lines but for the entities' scores (probabilities, to float32 rounding).
    outputs = {}
    for suffix in (".conll", ".jsonl"):
        for model in (heads[name], out):
            target = tmp_path / f"{model.name}{suffix}"
            argv = ["predict", "--model", str(model), "--input", str(tagger.data / "test.txt"), "--output", str(target),
                    "--output_format", suffix[1:]]
            assert run_cli(cli.main, argv) == 0
            outputs[model.name, suffix] = target.read_bytes()
    assert outputs[name, ".conll"] == outputs[out.name, ".conll"]
    rows = [[json.loads(line) for line in outputs[key, ".jsonl"].splitlines()] for key in (name, out.name)]
    for pytorch, onnx in zip(*rows, strict=True):
        scores = [e.pop("score") for e in pytorch["entities"]], [e.pop("score") for e in onnx["entities"]]
        assert pytorch == onnx and scores[0] == pytest.approx(scores[1], abs=1e-3)


@pytest.mark.integration
def test_int8_is_smaller_and_its_agreement_is_stated(heads, tagger, tmp_path):
    report = export_folder(str(heads["linear"]), str(tmp_path / "int8"), quantize="int8", check_file=str(tagger.data / "dev.txt"))
    assert report["precision"] == "int8" and report["int8_bytes"] < report["float32_bytes"]
    assert report["agreement"] >= report["min_agreement"] == 0.99
    assert f"{report['agreement']:.4%} of the word tags equal" in (tmp_path / "int8" / "README.md").read_text()


@pytest.mark.integration
def test_the_gate_refuses_and_leaves_nothing(heads, tagger, tmp_path, monkeypatch):
    import ner.predict.onnx

    def all_outside(self, ids, attention, first, opens, closes):  # a broken export: every word O
        import torch

        emissions = torch.zeros(*ids.shape, self.config.num_labels)
        return torch.zeros(ids.shape, dtype=torch.long), emissions

    monkeypatch.setattr(ner.predict.onnx.OnnxTagger, "__call__", all_outside)
    with pytest.raises(ValueError, match=r"export refused: on \d+ words of .*dev.txt the float32 ONNX model agrees"):
        export_folder(str(heads["linear"]), str(tmp_path / "out"), check_file=str(tagger.data / "dev.txt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.integration
def test_a_damaged_graph_is_refused_in_one_line(heads, tagger, tmp_path, capsys):
    out = tmp_path / "onnx"
    export_folder(str(heads["linear"]), str(out), check_file=str(tagger.data / "dev.txt"))
    graph = out / ONNX_FILE
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{graph}: not a readable ONNX model \(.*\); export it again"):
        NerPredictor(str(out))
    argv = ["predict", "--model", str(out), "--input", str(tagger.data / "test.txt"), "--output", str(tmp_path / "o.txt")]
    assert run_cli(cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1].startswith(f"error: {graph}: not a readable ONNX model")
    assert not (tmp_path / "o.txt").exists()


def test_export_refuses_bad_requests_before_work(plain_model, tmp_path):
    with pytest.raises(ValueError, match="--quantize int4: give int8"):
        export_folder(str(plain_model), str(tmp_path / "x"), quantize="int4")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="taken: exists; give the path of a new folder"):
        export_folder(str(plain_model), str(tmp_path / "taken"))
    with pytest.raises(ValueError, match="no eval_predictions.txt or predict_predictions.txt .* give --check_file"):
        export_folder(str(plain_model), str(tmp_path / "y"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
