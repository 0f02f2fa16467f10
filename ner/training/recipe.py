"""The defaults of a run, declared once: the head a new classifier gets, the learning-rate rule, warmup and batch
sizes. ``run_ner.py`` and ``NerTrainingArguments`` read them from ``RECIPE``; a library user gets the command
line's model with ``load_model(..., new_head=RECIPE.new_head(head))``. Why each value (the runs, corpora, seeds and
F1 behind it) is in the README, "Defaults, and why"; change a value only with a measured gain on both corpora.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WHY = "README.md, 'Defaults, and why'"  # where the log lines send a user who asks why a default is what it is


@dataclass(frozen=True)
class Recipe:
    """One run's defaults (each overridden by its command-line option)."""

    use_crf: bool = True  # a new classifier head is a CRF (--use_crf false: linear)
    small_encoder_width: int = 384  # up to this hidden size (MiniLM's) ...
    small_encoder_learning_rate: float = 1e-4  # ... the learning rate is this; wider encoders keep transformers' 5e-5
    warmup_ratio: float = 0.1  # linear warmup over this share of the steps
    train_batch_size: int = 32  # sentences per device and step
    eval_batch_size: int = 64  # does not change results

    def new_head(self, head: Mapping[str, Any], *, label_all_tokens: bool = False) -> tuple[dict[str, tuple[Any, str]], str | None]:
        """``load_model``'s ``new_head`` for a new classifier, given the head settings the user chose: a CRF unless
        they chose the head (``use_crf``), a decoding without a CRF (``decoding``) or labels on every sub-token
        (which a CRF does not take). Returns it, and why the head stays linear when it does (for the log)."""
        if "use_crf" in head or not self.use_crf:
            return {}, None
        reason = "--decoding" if "decoding" in head else "--label_all_tokens" if label_all_tokens else None
        if reason:
            return {}, f"A new head is linear with {reason} (without it, the default is a CRF)."
        announcement = (
            "A new CRF head: the default (measured: " + WHY + "). Its folder carries its own code: pipeline(..., "
            "trust_remote_code=True) decodes with the CRF, plain transformers reads the emissions by argmax; "
            "--use_crf false trains a linear head."
        )
        return {"use_crf": (True, announcement)}, None

    def learning_rate(self, config: Any) -> float | None:
        """The learning rate for ``config``'s encoder when the user gave none, or None for transformers' 5e-5."""
        return self.small_encoder_learning_rate if config.hidden_size <= self.small_encoder_width else None


RECIPE = Recipe()
