"""Attention for packed training rows: a 4D block-diagonal mask, or on CUDA flex attention with a block mask.

How the rows' sentences are kept apart (``choose_packed_attention``): a 4D mask (``"mask"``, any device;
SDPA then cannot use its flash kernel), or on CUDA flex attention with a document block mask
(``"flex"``: the collator sends per-token document ids, ``BatchingTrainer`` turns them into a
``BlockMask`` on the device). Flex attention has no attention dropout, so it is chosen by itself only
for models whose attention dropout is 0.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

# torch.nn.attention.flex_attention is imported where it is used: importing it costs about 1.4 s (it brings in the
# compiler stack), and only --packed_attention flex (CUDA) needs it.

# The attention implementation ``enable_flex_packing`` registers: flex attention for a ``BlockMask``, SDPA
# for anything else (padded evaluation batches).
SDPA_OR_FLEX = "ner_sdpa_or_flex"
# Attention implementations that accept a ready 4D mask (bool for SDPA, additive float for eager); SDPA_OR_FLEX
# takes SDPA's too.
PACKABLE_ATTENTION = ("sdpa", "eager")
PACKED_ATTENTION_CHOICES = ("auto", "flex", "mask")
FLEX_FORM = "flex_attention"  # PackingCollator's mask form for flex attention: per-token document ids


def flex_attention_available() -> bool:
    """Whether this torch has flex attention (2.5 and later)."""
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def choose_packed_attention(requested: str, attn_implementation: str | None, device_type: str, attention_dropout: float) -> str:
    """``"flex"`` or ``"mask"``: how packed rows keep their sentences apart (``--packed_attention``).

    ``"auto"`` takes flex attention on CUDA for an SDPA model whose attention dropout is 0; elsewhere it
    would change what is learned (flex attention has no attention dropout), so the 4D mask, which works
    on any device. ``"flex"`` asks for it anyway (attention dropout then not applied); it needs CUDA,
    since flex attention has no backward pass on the CPU.
    """
    if requested not in PACKED_ATTENTION_CHOICES:
        raise ValueError(f"--packed_attention must be one of {', '.join(PACKED_ATTENTION_CHOICES)}, got {requested!r}.")
    if requested == "mask":
        return "mask"
    if requested == "flex":
        if device_type != "cuda":
            raise ValueError(
                f"--packed_attention flex needs a CUDA device: flex attention has no backward pass on {device_type!r} "
                f"(torch {torch.__version__}). Use --packed_attention mask (or auto)."
            )
        if not flex_attention_available():
            raise ValueError(
                f"--packed_attention flex needs torch.nn.attention.flex_attention (torch 2.5 or later); this is torch "
                f"{torch.__version__}. Use --packed_attention mask, or upgrade torch."
            )
        return "flex"
    sdpa = attn_implementation in ("sdpa", SDPA_OR_FLEX)
    return "flex" if device_type == "cuda" and flex_attention_available() and sdpa and not attention_dropout else "mask"


def document_block_mask(document_ids: torch.Tensor) -> Any:
    """A flex attention ``BlockMask`` [rows, 1, length, length] built where ``document_ids`` [rows, length] lie:
    each position attends to the positions with its own id."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_document(row: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return document_ids[row, query] == document_ids[row, key]

    rows, length = document_ids.shape
    return create_block_mask(same_document, rows, None, length, length, device=document_ids.device)


def with_block_mask(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its ``document_ids`` (``PackingCollator`` for flex attention) turned into the
    ``attention_mask`` BlockMask; on the device when the batch is there already, so no mask is copied."""
    batch = dict(batch)
    batch["attention_mask"] = document_block_mask(batch.pop("document_ids"))
    return batch


@functools.cache
def _compiled_flex_attention() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _sdpa_or_flex_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The ``SDPA_OR_FLEX`` attention: flex attention over a ``BlockMask`` (without dropout: it has none),
    transformers' SDPA for any other mask. Inputs are [batch, heads, length, head size]."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    # Uncompiled flex attention is a slow reference; on the CPU it is all there is (forward only), and inside a
    # compiled model it is compiled with the model.
    eager = query.device.type == "cpu" or torch.compiler.is_compiling()
    attend = flex_attention if eager else _compiled_flex_attention()
    output = attend(query, key, value, block_mask=attention_mask, scale=scaling)
    return output.transpose(1, 2).contiguous(), None


def enable_flex_packing(model: Any) -> None:
    """Switch ``model`` to ``SDPA_OR_FLEX``: packed rows with a ``BlockMask`` go through flex attention, padded
    batches (evaluation) through SDPA as before. transformers does not save the attention implementation, so
    the saved model is unchanged."""

    AttentionInterface.register(SDPA_OR_FLEX, _sdpa_or_flex_attention)
    AttentionMaskInterface.register(SDPA_OR_FLEX, sdpa_mask)  # 2D padding masks become SDPA's masks
    model.set_attn_implementation(SDPA_OR_FLEX)
