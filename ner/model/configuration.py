"""The model's configuration: ``BertConfig`` plus the head settings, each declared once, as a config field.

A head setting (a field declared with ``head_setting``) carries its default (what a new head gets), the help
the command line shows for it, the values it may take, and whether the model card lists it. Adding one is
one field here (plus its use in ``ner.model.modeling``); an entry point offers it with ``head_argument``, hands
what the user gave to ``load_model`` with ``given_head_settings``, and lists it with ``head_hyperparameters``.

It is also copied into model folders that need their own code (``ner.model.modeling.REMOTE_CODE_FILES``), where
transformers finds it through config.json's ``auto_map``; ``ner.model`` registers it with the Auto classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import Field, field, fields
from typing import Any

from transformers import BertConfig

# Imported as part of this package (which registers its classes with the Auto classes), not as a copy in a model
# folder loaded with trust_remote_code.
HEAD_ACTIVATIONS = {"gelu": "GELU", "relu": "ReLU", "tanh": "Tanh"}  # setting -> torch.nn class name
DECODINGS = ("argmax", "constrained")


def head_setting(
    default: Any,
    help: str,
    *,
    choices: Iterable[str] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    on_card: bool = False,
) -> Any:
    """A ``NerBertConfig`` field that is a head setting: saved in config.json, kept when a fine-tuned model is
    loaded again, offered on the command line with ``help``, listed on the model card when ``on_card``; a number
    from ``minimum`` to ``maximum`` when given."""
    metadata = {
        "head_setting": True, "help": help, "choices": tuple(choices), "minimum": minimum, "maximum": maximum,
        "on_card": on_card,
    }
    return field(default=default, metadata=metadata)


class NerBertConfig(BertConfig):
    """``BertConfig`` plus the classifier head's settings and ``tag_scheme``, the scheme of ``id2label``.

    head_layers: 1 is a single linear layer (as Hugging Face's example); 2 or more puts ``head_layers - 1``
    hidden layers of ``head_hidden_size`` units before it (NeMo used 2). use_crf: a CRF over the word-level
    labels, trained with its log-likelihood, decoded with Viterbi. decoding: without a CRF, "argmax" per token
    or "constrained" (Viterbi over the tag scheme's valid transitions: no I-X after O in IOB2). context_size: the
    sub-tokens of document context each side the model was trained with (prediction uses the same).
    """

    model_type = "ner_bert"

    head_layers: int = head_setting(
        1,
        "Classifier head depth: 1 = one linear layer (stock-compatible; the default); 2+ = MLP (at most 16).",
        minimum=1,
        maximum=16,
        on_card=True,
    )
    head_hidden_size: int | None = head_setting(
        None, "Width of the MLP head's hidden layers (default: encoder width).", minimum=1, maximum=65536
    )
    head_activation: str = head_setting(
        "gelu", "MLP head activation: gelu (default), relu or tanh.", choices=HEAD_ACTIVATIONS
    )
    classifier_dropout: float | int | None = head_setting(
        None, "Dropout before (and inside) the head (default: the encoder's hidden dropout).", minimum=0, maximum=1
    )
    use_crf: bool = head_setting(
        False,
        "A CRF layer: trained with its log-likelihood, decoded with Viterbi (kept when reloading). run_ner.py gives a "
        "new head one unless --use_crf false (a linear head, loadable by plain pipeline()), --decoding or "
        "--label_all_tokens is given.",
        on_card=True,
    )
    crf_token_loss: float = head_setting(
        0.25,
        "Weight of the token cross-entropy added to a CRF's loss (both summed per sentence): it trains the emissions to "
        "tag on their own too, which is what plain transformers reads from the folder (argmax, without the CRF). "
        "0 = the CRF's likelihood alone.",
        minimum=0,
        on_card=True,
    )
    decoding: str = head_setting(
        "argmax",
        "Without a CRF: 'argmax' per token (default), or 'constrained' (only valid tag transitions, e.g. no I-X "
        "after O). Settings left out come from a fine-tuned model's own config.",
        choices=DECODINGS,
        on_card=True,
    )
    context_size: int = head_setting(
        0,
        "Sub-tokens of neighbouring sentences of the same -DOCSTART- document shown on each side of a sentence "
        "(not labelled; 0 = off, the default; a fine-tuned model keeps its own).",
        minimum=0,
        on_card=True,
    )
    tag_scheme: str = "IOB2"

    def validate_head(self) -> None:
        """Refuses a head setting outside the values its field declares."""
        for setting in HEAD_SETTINGS.values():
            value, rules = getattr(self, setting.name), setting.metadata
            if value is None or isinstance(value, (bool, str)):
                pass
            elif not math.isfinite(value):
                raise ValueError(f"{setting.name} must be a finite number, got {value}.")
            elif rules["minimum"] is not None and value < rules["minimum"]:
                raise ValueError(f"{setting.name} must be {rules['minimum']} or more, got {value}.")
            elif rules["maximum"] is not None and value > rules["maximum"]:
                raise ValueError(f"{setting.name} must be {rules['maximum']} or less, got {value}.")
            if rules["choices"] and value not in rules["choices"]:
                raise ValueError(f"{setting.name} {value!r} is not one of {', '.join(rules['choices'])}.")

    @property
    def stock_compatible(self) -> bool:
        """True when stock ``BertForTokenClassification`` (and ``pipeline()``) gives what this model scores:
        the same weights (a single linear layer, no CRF) and the same decoding (argmax per token).

        A constrained-decoding model keeps ``model_type`` ``ner_bert``, so that plain transformers refuses it
        instead of silently decoding it by argmax.
        """
        return self.stock_readable and not self.use_crf and self.decoding == "argmax"

    @property
    def stock_readable(self) -> bool:
        """True when stock ``BertForTokenClassification`` computes this model's emissions (a single linear layer):
        the folder then says ``model_type`` ``bert``, and plain transformers reads it as a token classifier that
        decodes them by argmax. A CRF or constrained model decodes them otherwise: with ``trust_remote_code=True``
        transformers runs its own code from the folder (``auto_map``). An MLP head has no stock reading: its folder
        keeps ``model_type`` ``ner_bert``, which plain transformers refuses, asking for ``trust_remote_code=True``.
        """
        return self.head_layers == 1

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> NerBertConfig:
        # A stock-compatible folder says model_type "bert"; reading it as ours is intended, not worth
        # transformers' "model of type bert to instantiate a model of type ner_bert" warning on every load.
        config_dict, kwargs = cls.get_config_dict(*args, **kwargs)
        if config_dict.get("model_type") == BertConfig.model_type:
            config_dict["model_type"] = cls.model_type
        return cls.from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("auto_map", None)
        if self.stock_readable:
            # Written as a plain BERT token classifier so that stock transformers loads it.
            output["model_type"] = BertConfig.model_type
        if self.stock_compatible:
            if output.get("architectures") == ["BertForNer"]:
                output["architectures"] = ["BertForTokenClassification"]
        else:
            output["auto_map"] = dict(AUTO_MAP)
        return output


# Where trust_remote_code finds the classes in a folder that carries the code (ner.model.modeling.REMOTE_CODE_FILES).
AUTO_MAP = {"AutoConfig": "configuration.NerBertConfig", "AutoModelForTokenClassification": "modeling.BertForNer"}

HEAD_SETTINGS: dict[str, Field] = {
    setting.name: setting for setting in fields(NerBertConfig) if setting.metadata.get("head_setting")
}


def head_argument(name: str, default: Any = None, **argparse: Any) -> Any:
    """The field of an entry point's argument dataclass that offers head setting ``name``, with its help.

    ``default`` stands for "not given" (so a fine-tuned model keeps its saved setting): None, or False for an
    option that can only switch a setting on. ``argparse``: more ``add_argument`` keywords (e.g. ``nargs="?",
    const=True`` so that a bare ``--use_crf`` means true and ``--use_crf false`` is possible too).
    """
    return field(default=default, metadata={"help": HEAD_SETTINGS[name].metadata["help"], **argparse})


def given_head_settings(*arguments: Any) -> dict[str, Any]:
    """The head settings set in the argument dataclasses ``arguments``, for ``load_model(head=...)``: each
    field named for a head setting whose value is not its default (``head_argument``'s "not given")."""
    return {
        option.name: getattr(group, option.name)
        for group in arguments
        for option in fields(group)
        if option.name in HEAD_SETTINGS and getattr(group, option.name) != option.default
    }


def head_hyperparameters(config: NerBertConfig) -> dict[str, Any]:
    """The head settings the model card lists (those declared ``on_card``), as ``config`` has them; with a CRF not
    ``decoding`` (the CRF decodes), without one not ``crf_token_loss``."""
    unused = "decoding" if config.use_crf else "crf_token_loss"
    return {
        name: getattr(config, name)
        for name, setting in HEAD_SETTINGS.items()
        if setting.metadata["on_card"] and name != unused
    }
