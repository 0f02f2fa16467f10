"""Prediction with a trained output folder: words or raw text in, tags and character-level entity spans out.

    from ner.predict import NerPredictor
    predictor = NerPredictor("out")
    predictor.predict_text(["Maria Lopez visited Porto."])   # [[Entity(start=0, end=11, type="PER", ...), ...]]

Inputs are encoded exactly as in training (``ner.data.alignment.encode_sentences``: sliding windows,
document context), so nothing is truncated and every input word gets one tag. Examples are sorted by
length and batched, run in bf16/fp16 on a GPU, and decoded by the model (argmax, constrained, CRF).

Every word's score is the probability of its tag, and every entity's the probability of that whole entity, under the
model's own distribution over tag paths (``ner.model.confidence``: forward-backward over the CRF, the softmax of a
plain head); entity probabilities then go through the folder's calibration (``calibration.json``, fitted on dev data
after training by ``ner.predict.calibration``). ``min_confidence`` drops the entities below it: their words are
tagged ``O``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from ner.data.alignment import (
    NO_POSITION, check_stride, encode_sentences, require_fast_tokenizer, resolve_max_seq_length, word_sources, word_tags,
)
from ner.data.schemes import entities
from ner.data.spans import WORD  # the one word rule for raw text, training spans and prediction alike
from ner.limits import Range, check_number
from ner.model.confidence import ConfidenceScorer, EntityCalibration, head_potentials
from ner.model.crf import FORBIDDEN_SCORE
from ner.model.modeling import BertForNer
from ner.predict.onnx import OnnxTagger, is_exported
from ner.sources.staging import check_weights_files
from ner.sources.tokenizer import check_tokenizer_files

logger = logging.getLogger(__name__)



@dataclass
class Entity:
    start: int  # character offset in the text (or in the words joined by single spaces)
    end: int  # exclusive
    type: str
    text: str
    score: float | None  # probability of the whole entity (calibrated where the folder is); None: confidences off


@dataclass
class Tagged:
    words: list[str]
    tags: list[str]
    scores: list[float]  # probability of each word's tag (empty with confidences off)
    entity_scores: list[float] = field(default_factory=list)  # probability of each entity of ``tags``, in order


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of raw text with their ``(start, end)`` character offsets in ``text``."""
    matches = list(WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


class NerPredictor:
    """A trained folder (``run_ner.py --output_dir``) ready to tag.

    ``max_seq_length`` follows training's rule (``ner.data.alignment.resolve_max_seq_length``): default the
    model's limit, at most 512; a value over the limit is refused. ``calibrated=False`` ignores the folder's
    calibration (entity confidences are the model's own probabilities); ``confidence=False`` tags without any
    scores; ``min_confidence`` drops entities less probable than that (``dropped``/``kept`` count them).
    """

    def __init__(
        self,
        model_dir: str,
        *,
        device: str | None = None,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        stride: int | None = None,
        dtype: str = "auto",
        calibrated: bool = True,
        confidence: bool = True,
        min_confidence: float = 0.0,
    ) -> None:
        check_number("min_confidence", min_confidence, Range(0.0, 1.0))
        if min_confidence and not confidence:
            raise ValueError("min_confidence needs the confidences: leave confidence on.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number of inputs, 1 or more; got {batch_size!r}.")
        exported = is_exported(model_dir)  # a folder ner.predict.export wrote: ONNX Runtime, on the CPU
        if exported and dtype not in ("auto", "float32"):
            raise ValueError(f"{model_dir} is an ONNX export: it runs at the precision it was exported with; leave out dtype.")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if exported and self.device.type != "cpu":
            if device is not None:
                logger.warning("%s is an ONNX export for the CPU: it runs there, not on %s.", model_dir, self.device)
            self.device = torch.device("cpu")
        self.autocast = self._autocast_dtype(dtype)  # a wrong name is refused before the model loads
        check_tokenizer_files(model_dir)
        self.onnx: OnnxTagger | None = None
        if exported:
            self.onnx = OnnxTagger(model_dir)
            self.model = None
            config = self.onnx.config
            head = self.onnx
        else:
            check_weights_files(model_dir)
            self.model = BertForNer.from_pretrained(model_dir).to(self.device).eval()
            config = self.model.config
            head = self.model
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        require_fast_tokenizer(self.tokenizer, model_dir)
        self.id2label = {int(i): label for i, label in config.id2label.items()}
        self.scheme = config.tag_scheme
        self.batch_size = batch_size
        self.max_seq_length = resolve_max_seq_length(max_seq_length, self.tokenizer, config)
        check_stride(stride, self.max_seq_length)
        self.stride = stride
        self.label2id = {label: i for i, label in self.id2label.items()}
        label_list = [self.id2label[i] for i in range(len(self.id2label))]
        self.scorer = ConfidenceScorer(label_list, head_potentials(head.crf, head.rules, len(label_list))) if confidence else None
        self.calibration = EntityCalibration.read(model_dir) if calibrated else EntityCalibration()
        self.min_confidence = min_confidence
        self.dropped = self.kept = 0  # entities below / at or above min_confidence, over every call

    def _autocast_dtype(self, dtype: str) -> torch.dtype | None:
        """Mixed precision: ``auto`` is bf16 (else fp16) on a GPU and float32 on a CPU, where bf16 is opt-in."""
        choices = {"auto": None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if dtype not in choices:
            raise ValueError(f"dtype must be one of {', '.join(choices)}, not {dtype!r}.")
        if self.device.type == "cuda":
            if dtype == "auto":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return choices[dtype]
        if dtype == "float16":
            raise ValueError("float16 is for GPUs; on a CPU use dtype='bfloat16' (fast where the CPU has bf16 instructions) or float32.")
        return choices[dtype]

    def tag(self, sentences: Sequence[Sequence[str]], documents: Sequence[int] | None = None) -> list[Tagged]:
        """One ``Tagged`` per sentence, every word tagged; ``documents`` (ids) turn on the model's context."""
        return self.tag_with_emissions(sentences, documents)[0]

    @torch.inference_mode()
    def tag_with_emissions(
        self, sentences: Sequence[Sequence[str]], documents: Sequence[int] | None = None
    ) -> tuple[list[Tagged], list[torch.Tensor]]:
        """``tag``, and each sentence's word-level emissions (``[words, labels]``, float32 on the CPU, each word's
        read where its tag is: what its confidences are computed from; empty with confidences off)."""
        if not sentences:
            return [], []
        examples = encode_sentences(
            sentences,
            tokenizer=self.tokenizer,
            max_seq_length=self.max_seq_length,
            stride=self.stride,
            documents=documents,
            context_size=self.config.context_size if documents is not None else 0,
        )
        count = len(examples["input_ids"])
        order = sorted(range(count), key=lambda i: len(examples["input_ids"][i]))
        pad_id = self.tokenizer.pad_token_id  # read once: each read is a vocabulary lookup
        pending: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []  # each batch's rows and device outputs
        for begin in range(0, count, self.batch_size):
            rows = order[begin : begin + self.batch_size]
            ids, attention, first = batch_arrays(
                [examples["input_ids"][r] for r in rows], [examples["word_positions"][r] for r in rows], pad_id,
                multiple=8 if self.device.type == "cuda" else 1,  # tensor cores; on a CPU only more padding
            )
            edges = {
                name: torch.tensor([examples[name][r] for r in rows], dtype=torch.bool, device=self.device)
                for name in ("opens_sentence", "closes_sentence")
            }
            if self.onnx is not None:
                predicted, emissions = self.onnx(ids, attention, torch.from_numpy(first), edges["opens_sentence"], edges["closes_sentence"])
            else:
                ids, attention, first = (torch.from_numpy(array).to(self.device) for array in (ids, attention, first))
                with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                    output = self.model(input_ids=ids, attention_mask=attention, word_starts=first, **edges)
                predicted = output.predictions
                emissions = output.logits if output.emissions is None else output.emissions  # the classifier's own scores
            pending.append((rows, predicted, emissions.float() if self.scorer is not None else None))
        # Read back only now: on a GPU the batches above were queued without waiting for one another.
        labels: list[list[int]] = [[] for _ in range(count)]  # per example: the label id decoded at each position
        where: list[tuple[int, int, int]] = [(0, 0, 0)] * count  # per example: its batch's offset, row and width
        flat: list[torch.Tensor] = []
        offset = 0
        for rows, predicted, emissions in pending:
            for local, (r, row_labels) in enumerate(zip(rows, predicted.cpu().tolist())):
                labels[r] = row_labels
                where[r] = (offset, local, predicted.shape[1])
            if emissions is not None:
                flat.append(emissions.cpu().flatten(0, 1))
                offset += emissions.shape[0] * emissions.shape[1]
        sources = word_sources(examples, [len(words) for words in sentences])
        tags = word_tags(labels, sources, self.id2label)
        if self.scorer is None:
            return [Tagged(list(w), t, []) for w, t in zip(sentences, tags)], []
        stitched = self._word_emissions(sources, where, torch.cat(flat))
        tag_ids = [[self.label2id[tag] for tag in sentence] for sentence in tags]
        marginals, probabilities = self.scorer.score(stitched, tag_ids)
        probabilities = [[self.calibration(p) for p in sentence] for sentence in probabilities]
        tagged = [self._confident(list(w), t, m, p) for w, t, m, p in zip(sentences, tags, marginals, probabilities)]
        return tagged, stitched

    def _word_emissions(
        self, sources: list[list[tuple[int, int] | None]], where: list[tuple[int, int, int]], flat: torch.Tensor
    ) -> list[torch.Tensor]:
        """Each sentence's emissions ``[words, labels]``, each word's read where its tag is read. A word with no
        sub-token is ``O`` by rule: its row allows ``O`` alone."""
        outside = self.label2id.get("O")
        certain = torch.full((1, flat.shape[1]), FORBIDDEN_SCORE)
        if outside is not None:
            certain[0, outside] = 0.0
        flat = torch.cat([flat, certain])
        spare = len(flat) - 1
        index = [
            spare if source is None else where[source[0]][0] + where[source[0]][1] * where[source[0]][2] + source[1]
            for sentence in sources
            for source in sentence
        ]
        words = flat[torch.tensor(index, dtype=torch.long)]
        return list(words.split([len(sentence) for sentence in sources]))

    def _confident(self, words: list[str], tags: list[str], marginals: torch.Tensor, probabilities: list[float]) -> Tagged:
        """``Tagged`` with its scores; entities below ``min_confidence`` become ``O`` (scored by ``O``'s probability)."""
        if self.min_confidence:
            kept = []
            for (first, end, _), probability in zip(entities(tags), probabilities):
                if probability < self.min_confidence:
                    tags[first:end] = ["O"] * (end - first)
                    self.dropped += 1
                else:
                    kept.append(probability)
                    self.kept += 1
            probabilities = kept
        ids = torch.tensor([self.label2id[tag] for tag in tags], dtype=torch.long)
        scores = marginals.gather(1, ids[:, None]).squeeze(1).tolist() if len(tags) else []
        return Tagged(words, tags, scores, probabilities)

    def entities(self, tagged: Tagged, text: str | None = None, offsets: Sequence[tuple[int, int]] | None = None) -> list[Entity]:
        """Character-level spans of ``tagged``'s entities in ``text`` (default: the words joined by spaces)."""
        if text is None:
            text, offsets, position = " ".join(tagged.words), [], 0
            for word in tagged.words:
                offsets.append((position, position + len(word)))
                position += len(word) + 1
        found = []
        scores = tagged.entity_scores or [None] * len(tagged.tags)
        for (first, end, entity_type), score in zip(entities(tagged.tags), scores):
            start, stop = offsets[first][0], offsets[end - 1][1]
            found.append(Entity(start, stop, entity_type, text[start:stop], None if score is None else round(score, 4)))
        return found

    def predict_text(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of each raw text (one document each), with offsets into that text."""
        split = [split_words(text) for text in texts]
        tagged = self.tag([words for words, _ in split])
        return [self.entities(t, text, offsets) for t, text, (_, offsets) in zip(tagged, texts, split)]


def batch_arrays(
    input_ids: Sequence[Sequence[int]], word_positions: Sequence[Sequence[int]], pad_id: int, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded ``input_ids``, ``attention_mask`` and word-start mask of a batch of examples, built without a
    per-row tensor: width the longest example rounded up to ``multiple``."""
    lengths = np.fromiter((len(row) for row in input_ids), dtype=np.int64, count=len(input_ids))
    width = int(lengths.max()) if len(lengths) else 0
    width += -width % multiple
    filled = np.arange(width) < lengths[:, None]  # row-major: True cells in the order of the rows' ids
    ids = np.full(filled.shape, pad_id, dtype=np.int64)
    ids[filled] = np.fromiter(chain.from_iterable(input_ids), dtype=np.int64, count=int(lengths.sum()))
    positions = [[p for p in row if p != NO_POSITION] for row in word_positions]
    row_of = np.repeat(np.arange(len(positions)), [len(row) for row in positions])
    first = np.zeros(filled.shape, dtype=bool)
    first[row_of, np.fromiter(chain.from_iterable(positions), dtype=np.int64, count=len(row_of))] = True
    return ids, filled.astype(np.int64), first


def chunks(items: Iterable[Any], size: int, boundary=lambda item: True) -> Iterator[list[Any]]:
    """Lists of about ``size`` items, cut before an item where ``boundary(item)`` (e.g. a new document).

    A run without a boundary is still cut at ``8 * size`` items, so memory stays bounded.
    """
    chunk: list[Any] = []
    for item in items:
        if (len(chunk) >= size and boundary(item)) or len(chunk) >= 8 * size:
            yield chunk
            chunk = []
        chunk.append(item)
    if chunk:
        yield chunk


def entity_dicts(entities: Sequence[Entity]) -> list[dict[str, Any]]:
    return [asdict(entity) for entity in entities]
