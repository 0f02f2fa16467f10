"""The token-classification model: a BERT encoder, dropout, and a linear or MLP head.

``NerBertConfig``/``BertForNer`` are registered with the Auto classes when ``ner`` is imported, so
``save_pretrained``/``from_pretrained`` round-trip. With the default single linear head the weights and
config are those of stock ``BertForTokenClassification`` (``model_type`` is written as ``bert``), so
the saved folder also loads in plain transformers and ``pipeline("token-classification")``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForTokenClassification, BertConfig
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

from ner.crf import CRF, allowed_transitions, constrained_decode

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of sub-tokens, special tokens and padding: no loss, not scored

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class NerBertConfig(BertConfig):
    """``BertConfig`` plus the classifier head's shape.

    head_layers: 1 is a single linear layer (as Hugging Face's example); 2 or more puts
    ``head_layers - 1`` hidden layers of ``head_hidden_size`` units before it (NeMo used 2).
    use_crf: a CRF over the word-level labels, trained with its log-likelihood, decoded with Viterbi.
    decoding: without a CRF, "argmax" per token or "constrained" (Viterbi over the tag scheme's valid
    transitions: no I-X after O in IOB2). tag_scheme names the scheme of ``id2label``. context_size: the
    sub-tokens of document context each side the model was trained with (prediction uses the same).
    """

    model_type = "ner_bert"

    head_layers: int = 1
    head_hidden_size: int | None = None
    head_activation: str = "gelu"
    use_crf: bool = False
    decoding: str = "argmax"
    tag_scheme: str = "IOB2"
    context_size: int = 0

    def validate_head(self) -> None:
        if self.head_layers < 1:
            raise ValueError(f"head_layers must be 1 (linear) or more (MLP), got {self.head_layers}.")
        if self.decoding not in ("argmax", "constrained"):
            raise ValueError(f"decoding must be 'argmax' or 'constrained', got {self.decoding!r}.")
        if self.head_activation not in ACTIVATIONS:
            raise ValueError(
                f"head_activation {self.head_activation!r} is not one of {', '.join(sorted(ACTIVATIONS))}."
            )

    @property
    def stock_compatible(self) -> bool:
        """True when the weights are exactly those of ``BertForTokenClassification``."""
        return self.head_layers == 1 and not self.use_crf

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if self.stock_compatible:
            # Written as a plain BERT token classifier so that stock transformers loads it.
            output["model_type"] = BertConfig.model_type
            if output.get("architectures") == [BertForNer.__name__]:
                output["architectures"] = ["BertForTokenClassification"]
        return output


class BertForNer(BertPreTrainedModel):
    """BERT encoder -> dropout -> head (linear or MLP) -> per-token label logits."""

    config_class = NerBertConfig
    # The loss is a mean over this batch's labelled positions; the Trainer must not rescale it by
    # num_items_in_batch (it would be N times too high under N processes or N accumulation steps).
    accepts_loss_kwargs = False

    def __init__(self, config: NerBertConfig) -> None:
        super().__init__(config)
        config.validate_head()
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        width = config.head_hidden_size or config.hidden_size
        layers: list[nn.Module] = []
        in_features = config.hidden_size
        for _ in range(config.head_layers - 1):
            layers += [nn.Linear(in_features, width), ACTIVATIONS[config.head_activation](), nn.Dropout(dropout)]
            in_features = width
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, config.num_labels)
        self.crf = None
        if config.use_crf:
            with torch.device("cpu"):  # from_pretrained builds the model on the meta device; the masks are data
                allowed = allowed_transitions(self.label_list, config.tag_scheme)
            self.crf = CRF(config.num_labels, allowed)
        self.post_init()

    @property
    def label_list(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, CRF):
            for parameter in (module.transitions, module.start_transitions, module.end_transitions):
                nn.init.uniform_(parameter, -0.1, 0.1)

    @torch.no_grad()
    def decode(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Label ids [batch, length] at the positions in ``mask`` (the labelled sub-tokens); 0 elsewhere.

        Argmax, or Viterbi under the CRF's learnt transitions, or under the scheme's valid transitions.
        """
        if self.crf is not None:
            return self.crf.decode(logits, mask)
        if self.config.decoding == "constrained":
            return constrained_decode(logits, mask, self.label_list, self.config.tag_scheme)
        return logits.argmax(dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput:
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        hidden = self.head(self.dropout(outputs.last_hidden_state))
        logits = self.classifier(hidden)
        loss = None
        if labels is not None and self.crf is not None:
            loss = self.crf.neg_log_likelihood(logits, labels, labels != IGNORE_INDEX)
        elif labels is not None:
            loss = nn.functional.cross_entropy(
                logits.view(-1, self.num_labels).float(), labels.view(-1), ignore_index=IGNORE_INDEX
            )
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


AutoConfig.register(NerBertConfig.model_type, NerBertConfig)
AutoModelForTokenClassification.register(NerBertConfig, BertForNer)


HEAD_DEFAULTS = {
    "head_layers": 1,
    "head_hidden_size": None,
    "head_activation": "gelu",
    "classifier_dropout": None,
    "use_crf": False,
    "decoding": "argmax",
    "context_size": 0,
}


def load_model(
    model_name_or_path: str,
    label_list: list[str],
    *,
    config_name: str | None = None,
    head_layers: int | None = None,
    head_hidden_size: int | None = None,
    head_activation: str | None = None,
    classifier_dropout: float | None = None,
    use_crf: bool | None = None,
    decoding: str | None = None,
    tag_scheme: str = "IOB2",
    context_size: int | None = None,
    **hub_kwargs: Any,
) -> BertForNer:
    """A ``BertForNer`` for ``label_list`` on a pretrained BERT (Hub name or local folder).

    ``hub_kwargs`` (``cache_dir``, ``revision``, ``token``, ...) go to ``from_pretrained``. A model whose
    classifier was already trained on the same label set keeps its label order (read the labels back from
    ``model.config.id2label``); one trained on other labels gets a new classifier, with a warning.
    Head settings left as None come from the model's saved config (a folder this toolkit wrote), else
    from ``HEAD_DEFAULTS``.
    """
    base = AutoConfig.from_pretrained(config_name or model_name_or_path, **hub_kwargs)
    hub_kwargs = dict(hub_kwargs)
    if base.model_type not in (BertConfig.model_type, NerBertConfig.model_type):
        raise ValueError(
            f"{config_name or model_name_or_path} is a {base.model_type!r} model; this toolkit fine-tunes "
            "BERT-family encoders (model_type 'bert'), e.g. bert-base-cased, SciBERT, BioBERT."
        )
    trained_labels = [base.id2label[i] for i in range(base.num_labels)] if base.id2label else []
    if trained_labels == [f"LABEL_{i}" for i in range(len(trained_labels))]:
        trained_labels = []  # no classifier trained yet
    if trained_labels and set(trained_labels) == set(label_list):
        label_list = trained_labels  # keep the trained classifier's label order
    elif trained_labels:
        logger.warning(
            "%s was trained for labels %s; the data has %s, so the classifier is initialised anew.",
            model_name_or_path,
            trained_labels,
            label_list,
        )
        hub_kwargs["ignore_mismatched_sizes"] = True
    settings = {key: value for key, value in base.to_dict().items() if key not in ("model_type", "transformers_version")}
    requested = dict(
        head_layers=head_layers,
        head_hidden_size=head_hidden_size,
        head_activation=head_activation,
        classifier_dropout=classifier_dropout,
        use_crf=use_crf,
        decoding=decoding,
        context_size=context_size,
    )
    for key, default in HEAD_DEFAULTS.items():
        saved = settings.get(key, default) if trained_labels else default
        settings[key] = requested[key] if requested[key] is not None else saved
    settings.update(
        num_labels=len(label_list),
        id2label=dict(enumerate(label_list)),
        label2id={label: index for index, label in enumerate(label_list)},
        tag_scheme=tag_scheme,
    )
    config = NerBertConfig(**settings)
    return BertForNer.from_pretrained(model_name_or_path, config=config, **hub_kwargs)
