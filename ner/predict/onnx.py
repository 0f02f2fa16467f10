"""ONNX Runtime folders: the graph, how it is exported and quantized, and how an exported folder tags
(``OnnxTagger``, used by ``NerPredictor``); ``ner.predict.export`` writes such folders behind the parity gate.

The encoder and head are one ONNX graph (``input_ids``, ``attention_mask`` -> ``emissions``; dynamic batch and
length), exported by torch.onnx's TorchScript exporter (opset 17: it needs no extra package, and the graph of a
BERT encoder holds nothing it cannot trace). Decoding stays outside the graph: argmax, or Viterbi under the CRF's
learnt scores (saved beside it, ``decoding.safetensors``) or under the scheme's valid transitions (from the label
list and scheme in ``config.json``), by the model's own code (``ner.model.modeling.decode_emissions``) on the CPU,
so that an exported folder decodes exactly as the PyTorch folder does. ``--quantize int8`` is onnxruntime's dynamic
quantization: int8 weights for the matrix products, activations quantized on the fly.

Parity gate: the exporter tags a sample with both backends (``--check_file``, else the folder's
``eval_predictions.txt``, else its ``predict_predictions.txt``) and writes the folder only when the word tags
agree at least ``--min_agreement`` (default 0.999 for float32, 0.99 for int8) and the entity F1 against the
sample's gold tags drops by at most ``--max_f1_drop`` (0.001 / 0.003); the figures go into ``export.json`` and the
folder's ``README.md``. A refused export leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ner.model.configuration import NerBertConfig
from ner.model.confidence import CALIBRATION_FILE
from ner.model.crf import CRF, TransitionRules, allowed_transitions
from ner.model.modeling import decode_emissions

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
DECODING_FILE = "decoding.safetensors"  # a CRF's learnt transition, start and end scores
EXPORT_FILE = "export.json"  # what was exported, how, and the parity figures
# From the PyTorch folder: the tokenizer and the config.
COPIED_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json", CALIBRATION_FILE,
)
PRECISIONS = ("float32", "int8")
DEFAULT_MIN_AGREEMENT = {"float32": 0.999, "int8": 0.99}  # int8 measured 99.2-99.3% (bench/RESULTS.md)
DEFAULT_MAX_F1_DROP = {"float32": 0.001, "int8": 0.003}
OPSET = 17


def is_exported(folder: str | os.PathLike) -> bool:
    """True for a folder ``export`` wrote (an ONNX graph beside the tokenizer), rather than a PyTorch folder."""
    return (Path(folder) / ONNX_FILE).is_file()


class OnnxTagger:
    """An exported folder's graph and decoding. Called with a batch (``input_ids``, ``attention_mask`` as int64 arrays,
    word starts and the sentence-edge flags as bool tensors), it returns the decoded label ids and the emissions,
    as ``BertForNer``'s forward does in evaluation."""

    def __init__(self, folder: str | os.PathLike) -> None:
        import onnxruntime  # imported here: only an exported folder needs it (about 0.3 s)

        path = Path(folder) / ONNX_FILE
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...), none public
            raise ValueError(f"{path}: not a readable ONNX model ({str(error).strip()[:200]}); export it again.") from None
        self.config = NerBertConfig.from_pretrained(folder)
        labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        allowed = allowed_transitions(labels, self.config.tag_scheme)
        self.crf = self.rules = None
        if self.config.use_crf:
            self.crf = CRF(self.config.num_labels, allowed)
            scores = load_file(Path(folder) / DECODING_FILE)
            with torch.no_grad():
                for name, parameter in self.crf.named_parameters():
                    parameter.copy_(scores[name])
        elif self.config.decoding == "constrained":
            self.rules = TransitionRules(allowed)

    def __call__(
        self, ids: np.ndarray, attention: np.ndarray, first: torch.Tensor, opens: torch.Tensor, closes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        (emissions,) = self.session.run(["emissions"], {"input_ids": ids, "attention_mask": attention})
        emissions = torch.from_numpy(emissions)
        return decode_emissions(emissions, first, self.crf, self.rules, opens, closes), emissions


class _Emissions(torch.nn.Module):
    """The graph to export: ``BertForNer.emissions``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.emissions(input_ids, attention_mask)


def export_graph(model: Any, path: Path) -> None:
    """``model``'s encoder and head as an ONNX graph with dynamic batch and length."""
    example = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 0]], dtype=torch.int64)  # any ids the vocabulary has
    mask = (example != 0).long()
    dynamic = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
               "emissions": {0: "batch", 1: "length"}}
    with torch.no_grad():
        torch.onnx.export(
            _Emissions(model).eval(), (example, mask), str(path), input_names=["input_ids", "attention_mask"],
            output_names=["emissions"], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )
    model.eval()  # the exporter puts the modules back in the mode it found them in


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization of ``source``'s weights into ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # imported here: only --quantize int8 needs it

    # Per channel: measured on a MiniLM CRF tagger (CoNLL-2003 test, 1,000 sentences), 99.21% of word tags as float32
    # against 98.56% per tensor, at the same speed and size; leaving the attention's activation products or the
    # classifier in float32 did not raise it (bench/RESULTS.md, "ONNX Runtime export").
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
