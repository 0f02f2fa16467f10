"""Packed attention (ner/training/attention.py): the path chosen, and flex attention's document block mask equal to the 4D mask."""

from __future__ import annotations

import pytest
import torch
from transformers import BertTokenizerFast, DataCollatorForTokenClassification

from torch.nn.attention.flex_attention import BlockMask

import batch_helpers
from batch_helpers import LABELS, SENTENCES, features
from ner.training.attention import FLEX_FORM, SDPA_OR_FLEX, choose_packed_attention, document_block_mask, enable_flex_packing, with_block_mask
from ner.training.packing import PackingCollator, pack_rows
from ner.model.modeling import load_model

model_and_tokenizer = batch_helpers.model_and_tokenizer  # the module-scoped fixture: one model per test file


def sentence_pieces(tokenizer, sentences):
    """The padded and the packed-for-flex-attention batch of ``sentences``, and their features."""
    batch = features(tokenizer, sentences)
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in batch])
    packed = PackingCollator(tokenizer.pad_token_id, FLEX_FORM)([dict(f) for f in batch])
    return batch, padded, packed


@pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")
def test_flex_packed_rows_give_the_padded_logits_and_loss(tiny_bert):
    # Forward only: flex attention has no backward pass on the CPU (the gradients are checked on CUDA).
    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS).eval()
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    batch, padded, packed = sentence_pieces(tokenizer, SENTENCES)
    assert "attention_mask" not in packed and packed["document_ids"].shape == packed["input_ids"].shape
    with torch.no_grad():
        plain = model(**padded)
        enable_flex_packing(model)
        assert model.config._attn_implementation == SDPA_OR_FLEX
        dispatched = model(**padded)  # padded batches still go through SDPA
        inputs = with_block_mask(packed)
        assert isinstance(inputs["attention_mask"], BlockMask)
        flex = model(**inputs)
    torch.testing.assert_close(dispatched.logits, plain.logits, rtol=0, atol=0)
    torch.testing.assert_close(flex.loss, plain.loss, rtol=1e-5, atol=1e-6)
    lengths = [len(f["input_ids"]) for f in batch]
    for row, members in enumerate(pack_rows(lengths, max(lengths))):
        start = 0
        for index in members:
            torch.testing.assert_close(
                flex.logits[row, start : start + lengths[index]], plain.logits[index, : lengths[index]], rtol=1e-4, atol=1e-5
            )
            start += lengths[index]


def test_document_block_mask_is_the_4d_mask(model_and_tokenizer):
    from torch.nn.attention.flex_attention import create_mask

    _, tokenizer = model_and_tokenizer
    batch = features(tokenizer, SENTENCES)
    dense = PackingCollator(tokenizer.pad_token_id, "sdpa")([dict(f) for f in batch])["attention_mask"]
    ids = PackingCollator(tokenizer.pad_token_id, FLEX_FORM)([dict(f) for f in batch])["document_ids"]
    block_mask = document_block_mask(ids)
    rows, _, length, _ = dense.shape
    assert block_mask.shape == (rows, 1, length, length)
    assert torch.equal(create_mask(block_mask.mask_mod, rows, 1, length, length, device="cpu"), dense)


@pytest.mark.parametrize("requested, attention, device, dropout, chosen", [
    ("auto", "sdpa", "cuda", 0.0, "flex"),
    ("auto", SDPA_OR_FLEX, "cuda", 0.0, "flex"),
    ("auto", "sdpa", "cuda", 0.1, "mask"),  # flex attention has no attention dropout: not chosen by itself
    ("auto", "eager", "cuda", 0.0, "mask"),
    ("auto", "sdpa", "cpu", 0.0, "mask"),
    ("flex", "sdpa", "cuda", 0.1, "flex"),
    ("mask", "sdpa", "cuda", 0.0, "mask"),
])
def test_choose_packed_attention(requested, attention, device, dropout, chosen):
    assert choose_packed_attention(requested, attention, device, dropout) == chosen


@pytest.mark.parametrize("requested, device, message", [
    ("flex", "cpu", "needs a CUDA device.*--packed_attention mask"),
    ("fast", "cuda", "must be one of auto, flex, mask"),
])
def test_choose_packed_attention_refuses(requested, device, message):
    with pytest.raises(ValueError, match=message):
        choose_packed_attention(requested, "sdpa", device, 0.0)


def test_build_trainer_logs_the_packed_attention_path(model_and_tokenizer, tmp_path, caplog):
    import datasets

    from ner.training.trainer import NerTrainingArguments, build_trainer

    model, tokenizer = model_and_tokenizer
    args = NerTrainingArguments(output_dir=str(tmp_path), report_to="none", eval_strategy="no", save_strategy="no")
    with caplog.at_level("INFO", logger="ner.training.trainer"):
        build_trainer(model, args, tokenizer, train_dataset=datasets.Dataset.from_list(features(tokenizer, SENTENCES)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training batches")]
    assert lines == [
        "Training batches are packed: rows as long as each batch's longest sentence; attention: a 4D block-diagonal mask (sdpa)."
    ]


@pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")
def test_flex_path_through_the_trainer(tiny_bert, tmp_path, monkeypatch, caplog):
    """As on CUDA (the choice faked): the model switched, document ids collated, the BlockMask built in compute_loss."""
    import datasets

    import ner.training.attention
    import ner.training.trainer
    from ner.training.trainer import NerTrainingArguments, build_trainer

    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    monkeypatch.setattr(ner.training.trainer, "choose_packed_attention", lambda *args: "flex")
    args = NerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=5, report_to="none", eval_strategy="no", save_strategy="no"
    )
    dataset = datasets.Dataset.from_list(features(tokenizer, SENTENCES))
    with caplog.at_level("INFO", logger="ner.training.trainer"):
        trainer = build_trainer(model, args, tokenizer, train_dataset=dataset)
    assert "attention: flex attention with a document block mask (attention dropout 0.1 not applied" in caplog.text
    assert model.config._attn_implementation == SDPA_OR_FLEX
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    seen = {}
    forward = model.forward

    def spy(**kwargs):
        seen.update(kwargs)
        return forward(**kwargs)

    monkeypatch.setattr(model, "forward", spy)
    with torch.no_grad():  # flex attention has no backward on a CPU
        trainer.compute_loss(model, batch)  # the BlockMask is built here, on the device, before the model sees the batch
    monkeypatch.setattr(model, "forward", forward)
    assert isinstance(seen["attention_mask"], BlockMask) and "document_ids" not in seen
    inputs = with_block_mask(batch)
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in features(tokenizer, SENTENCES)])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).loss, model(**padded).loss, rtol=1e-5, atol=1e-6)
