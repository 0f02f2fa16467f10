"""Prediction with a trained output folder: words or raw text in, tags and character-level entity spans out.

    from ner.predict import NerPredictor
    predictor = NerPredictor("out")
    predictor.predict_text(["Maria Lopez visited Porto."])   # [[Entity(start=0, end=11, type="PER", ...), ...]]

Inputs are encoded exactly as in training (``ner.data.alignment.encode_sentences``: sliding windows,
document context), so nothing is truncated and every input word gets one tag. Examples are sorted by
length and batched, run in bf16/fp16 on a GPU, and decoded by the model (argmax, constrained, CRF).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
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
    score: float  # mean probability of the entity's word labels


@dataclass
class Tagged:
    words: list[str]
    tags: list[str]
    scores: list[float]  # probability of each word's tag


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of raw text with their ``(start, end)`` character offsets in ``text``."""
    matches = list(WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


class NerPredictor:
    """A trained folder (``run_ner.py --output_dir``) ready to tag.

    ``max_seq_length`` follows training's rule (``ner.data.alignment.resolve_max_seq_length``): default the
    model's limit, at most 512; a value over the limit is refused.
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
    ) -> None:
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
        else:
            check_weights_files(model_dir)
            self.model = BertForNer.from_pretrained(model_dir).to(self.device).eval()
            config = self.model.config
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        require_fast_tokenizer(self.tokenizer, model_dir)
        self.id2label = {int(i): label for i, label in config.id2label.items()}
        self.scheme = config.tag_scheme
        self.batch_size = batch_size
        self.max_seq_length = resolve_max_seq_length(max_seq_length, self.tokenizer, config)
        check_stride(stride, self.max_seq_length)
        self.stride = stride

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

    @torch.inference_mode()
    def tag(self, sentences: Sequence[Sequence[str]], documents: Sequence[int] | None = None) -> list[Tagged]:
        """One ``Tagged`` per sentence, every word tagged; ``documents`` (ids) turn on the model's context."""
        if not sentences:
            return []
        examples = encode_sentences(
            sentences,
            tokenizer=self.tokenizer,
            max_seq_length=self.max_seq_length,
            stride=self.stride,
            documents=documents,
            context_size=self.config.context_size if documents is not None else 0,
        )
        count = len(examples["input_ids"])
        labels: list[list[int]] = [[] for _ in range(count)]  # per example: the label id decoded at each position
        probabilities: list[list[float]] = [[] for _ in range(count)]  # and its probability
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
            chosen = emissions.float().softmax(-1).gather(-1, predicted.unsqueeze(-1)).squeeze(-1)
            pending.append((rows, predicted, chosen))
        # Read back only now: on a GPU the batches above were queued without waiting for one another.
        for rows, predicted, chosen in pending:
            for r, row_labels, row_probabilities in zip(rows, predicted.cpu().tolist(), chosen.cpu().tolist()):
                labels[r], probabilities[r] = row_labels, row_probabilities
        sources = word_sources(examples, [len(words) for words in sentences])
        tags = word_tags(labels, sources, self.id2label)
        # A word with no sub-token is O by rule, not by the model: certain.
        scores = [[1.0 if source is None else probabilities[source[0]][source[1]] for source in sentence] for sentence in sources]
        return [Tagged(list(w), t, s) for w, t, s in zip(sentences, tags, scores)]

    def entities(self, tagged: Tagged, text: str | None = None, offsets: Sequence[tuple[int, int]] | None = None) -> list[Entity]:
        """Character-level spans of ``tagged``'s entities in ``text`` (default: the words joined by spaces)."""
        if text is None:
            text, offsets, position = " ".join(tagged.words), [], 0
            for word in tagged.words:
                offsets.append((position, position + len(word)))
                position += len(word) + 1
        found = []
        for first, end, entity_type in entities(tagged.tags):
            start, stop = offsets[first][0], offsets[end - 1][1]
            score = sum(tagged.scores[first:end]) / (end - first)
            found.append(Entity(start, stop, entity_type, text[start:stop], round(score, 4)))
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
