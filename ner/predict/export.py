"""``python -m ner export MODEL_DIR OUT_DIR [--quantize int8]``: an ONNX Runtime folder (``ner.predict.onnx``) of a
folder ``run_ner.py`` wrote, written only when the parity gate passes.

The gate tags a sample with both backends (``--check_file``, else the folder's ``eval_predictions.txt``, else its
``predict_predictions.txt``) and refuses, leaving nothing behind, when the word tags agree less than
``--min_agreement`` or the entity F1 against the sample's gold drops more than ``--max_f1_drop``; the figures go
into ``export.json`` and the folder's ``README.md``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from ner.data.conll import read_conll
from ner.data.schemes import as_scored
from ner.files import atomic_writer, new_work_folder, readable_as_umask_allows
from ner.predict.onnx import (
    DECODING_FILE, DEFAULT_MAX_F1_DROP, DEFAULT_MIN_AGREEMENT, EXPORT_FILE, ONNX_FILE, OPSET, PRECISIONS, COPIED_FILES,
    export_graph, is_exported, quantize_int8,
)
from ner.predict.predictor import NerPredictor
from ner.training.metrics import entity_scores

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """The sentences the parity gate tags: words, gold tags (None without), document ids (None without)."""

    source: str
    words: list[list[str]]
    gold: list[list[str]] | None
    documents: list[int] | None


def parity_sample(model_dir: str | os.PathLike, check_file: str | None) -> Sample:
    """``check_file`` (CoNLL, gold optional), else the folder's dev, else its test predictions (word, gold, predicted)."""
    if check_file is not None:
        sentences = list(read_conll(check_file, tags_optional=True))
        source = check_file
    else:
        found = [Path(model_dir) / name for name in ("eval_predictions.txt", "predict_predictions.txt")]
        found = [path for path in found if path.is_file()]
        if not found:
            raise ValueError(
                f"{model_dir}: no eval_predictions.txt or predict_predictions.txt to check the export against; give "
                "--check_file FILE (CoNLL words, gold tags optional)."
            )
        sentences = list(read_conll(found[0], label_column=1))
        source = str(found[0])
    if not sentences:
        raise ValueError(f"{source}: no sentences to check the export against.")
    gold = [as_scored(s.tags) for s in sentences] if all(s.tags is not None for s in sentences) else None
    documents = [s.document_id for s in sentences] if any(s.doc_start for s in sentences) else None
    return Sample(source, [s.words for s in sentences], gold, documents)


def parity(reference: Sequence[Sequence[str]], exported: Sequence[Sequence[str]], gold, scheme: str) -> dict[str, Any]:
    """Word-tag agreement of two taggings of the same words, and each one's entity F1 against ``gold`` (if any)."""
    words = sum(len(tags) for tags in reference)
    same = sum(a == b for ref, exp in zip(reference, exported) for a, b in zip(ref, exp))
    figures: dict[str, Any] = {"sentences": len(reference), "words": words, "agreement": same / words if words else 1.0}
    if gold is not None:
        figures["f1_pytorch"] = entity_scores(gold, reference, scheme)["f1"]
        figures["f1_onnx"] = entity_scores(gold, exported, scheme)["f1"]
    return figures


def export_folder(
    model_dir: str,
    out_dir: str,
    *,
    quantize: str | None = None,
    check_file: str | None = None,
    min_agreement: float | None = None,
    max_f1_drop: float | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Export ``model_dir`` (a folder ``run_ner.py`` wrote) to ``out_dir`` for ONNX Runtime, behind the parity gate.

    Returns the figures written to ``export.json``. Raises ``ValueError`` (and writes nothing) when the gate refuses.
    """
    precision = quantize or "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"--quantize {quantize}: give int8 (or leave it out for float32).")
    min_agreement = DEFAULT_MIN_AGREEMENT[precision] if min_agreement is None else min_agreement
    max_f1_drop = DEFAULT_MAX_F1_DROP[precision] if max_f1_drop is None else max_f1_drop
    if not 0 <= min_agreement <= 1 or not 0 <= max_f1_drop <= 1:
        raise ValueError("--min_agreement and --max_f1_drop are shares: give values from 0 to 1.")
    out = Path(out_dir)
    if out.exists():
        raise ValueError(f"{out_dir}: exists; give the path of a new folder.")
    if is_exported(model_dir):
        raise ValueError(f"{model_dir}: already an exported (ONNX) folder; export the PyTorch folder run_ner.py wrote.")
    reference = NerPredictor(model_dir, device="cpu", dtype="float32", batch_size=batch_size)
    sample = parity_sample(model_dir, check_file)
    work = new_work_folder(out.resolve().parent, out.name)
    try:
        started = time.perf_counter()
        float32 = work / ("model.float32.onnx" if quantize else ONNX_FILE)
        export_graph(reference.model, float32)
        sizes = {"float32_bytes": float32.stat().st_size}
        if quantize:
            quantize_int8(float32, work / ONNX_FILE)
            float32.unlink()
            sizes["int8_bytes"] = (work / ONNX_FILE).stat().st_size
        if reference.model.crf is not None:
            save_file({name: p.detach().contiguous() for name, p in reference.model.crf.named_parameters()}, work / DECODING_FILE)
            readable_as_umask_allows(work / DECODING_FILE)
        for name in COPIED_FILES:
            if (Path(model_dir) / name).is_file():
                shutil.copy(Path(model_dir) / name, work / name)
        seconds = time.perf_counter() - started
        exported = NerPredictor(str(work), batch_size=batch_size)
        figures = parity(
            [t.tags for t in reference.tag(sample.words, sample.documents)],
            [t.tags for t in exported.tag(sample.words, sample.documents)],
            sample.gold, reference.scheme,
        )
        drop = figures["f1_pytorch"] - figures["f1_onnx"] if sample.gold is not None else 0.0
        report = {
            "precision": precision, "opset": OPSET, "source": str(model_dir), "sample": sample.source, **figures,
            "f1_drop": drop, "min_agreement": min_agreement, "max_f1_drop": max_f1_drop, **sizes,
            "export_seconds": round(seconds, 1),
        }
        if figures["agreement"] < min_agreement or drop > max_f1_drop:
            raise ValueError(
                f"export refused: on {figures['words']} words of {sample.source} the {precision} ONNX model agrees with "
                f"PyTorch on {figures['agreement']:.4%} of the word tags (at least {min_agreement:.2%} asked) and its F1 "
                f"is {drop:+.4f} lower (at most {max_f1_drop} asked); nothing was written. --min_agreement/--max_f1_drop "
                "set the bars."
            )
        with atomic_writer(work / EXPORT_FILE) as stream:
            stream.write(json.dumps(report, indent=2) + "\n")
        with atomic_writer(work / "README.md") as stream:
            stream.write(export_card(report))
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("Exported %s to %s (%s): word tags agree %.4f%%", model_dir, out_dir, precision, 100 * report["agreement"])
    return report


def export_card(report: dict[str, Any]) -> str:
    """The exported folder's README: what it is, how to run it, and the parity figures the gate measured."""
    size = f"{report['float32_bytes'] / 1e6:.1f} MB (float32)"
    if "int8_bytes" in report:
        size = f"{report['int8_bytes'] / 1e6:.1f} MB int8, {report['int8_bytes'] / report['float32_bytes']:.0%} of the float32 graph's {report['float32_bytes'] / 1e6:.1f} MB"
    lines = [
        f"# {Path(report['source']).name} for ONNX Runtime ({report['precision']})",
        "",
        f"Exported from `{Path(report['source']).name}` by `python -m ner export`: the encoder and head as `{ONNX_FILE}` "
        f"(opset {report['opset']}, {size}); decoding (argmax, constrained or CRF Viterbi) runs outside the graph. Tag "
        "with `python -m ner predict --model THIS_FOLDER --input FILE` or `NerPredictor(\"THIS_FOLDER\")`.",
        "",
        "## Parity with the PyTorch model",
        "",
        f"Checked on {report['sentences']} sentences ({report['words']} words) of `{Path(report['sample']).name}`: "
        f"{report['agreement']:.4%} of the word tags equal PyTorch float32's (at least {report['min_agreement']:.2%} required).",
    ]
    if "f1_onnx" in report:
        lines.append(
            f"Entity F1 against the gold tags: ONNX {report['f1_onnx']:.4f}, PyTorch {report['f1_pytorch']:.4f} "
            f"(a drop of at most {report['max_f1_drop']} allowed)."
        )
    return "\n".join(lines) + "\n"
