"""The token-classification model: a BERT encoder, dropout, a linear or MLP head and its decoding; ``load_model``.

``BertForNer`` (configured by ``ner.model.configuration.NerBertConfig``) is registered with
``AutoModelForTokenClassification`` by ``import ner.model``, so ``save_pretrained``/``from_pretrained`` round-trip. A
single linear head (CRF or not) is saved as ``model_type`` ``bert`` with stock
``BertForTokenClassification``'s weight names, so plain transformers and ``pipeline("token-classification")`` read
the folder as a stock classifier over the same emissions. A head stock transformers cannot run exactly (CRF,
constrained decoding, MLP) also gets this module and the few it imports copied into the folder, named in
config.json's ``auto_map``: with ``trust_remote_code=True`` transformers runs it there, without this package.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, BertConfig
from transformers import initialization as init
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

# Relative imports only: this module travels in model folders (trust_remote_code), where ``ner`` is not installed.
from .configuration import HEAD_ACTIVATIONS, HEAD_SETTINGS, NerBertConfig
from .crf import (
    CRF, TransitionRules, allowed_transitions, constrained_decode, gather_words, scatter_words, word_index_of,
)
from ..tag_rules import IGNORE_INDEX, continuation_labels

logger = logging.getLogger(__name__)


@dataclass
class NerOutput(TokenClassifierOutput):
    """``TokenClassifierOutput`` plus ``predictions``: label ids decoded by the model's own decoding
    (argmax, constrained Viterbi or the CRF), outside training; 0 at positions that were not decoded.

    Outside training, a model that decodes by Viterbi returns ``logits`` shaped for ``pipeline()`` (their
    per-token argmax is the decoded tag: the word's at its first sub-token, the continuing ``I-X`` at its
    others) and the classifier's own scores as ``emissions``; otherwise ``logits`` are those scores and
    ``emissions`` is None.
    """

    emissions: torch.FloatTensor | None = None
    predictions: torch.LongTensor | None = None


# The modules a folder needs to load with trust_remote_code: this one and what it imports, and the tokenizer that
# marks word starts for pipeline(). Copied beside the weights by save_pretrained when the head is not stock.
REMOTE_CODE_FILES = ("configuration.py", "modeling.py", "crf.py", "tag_rules.py", "tokenization_ner.py")
# In a model folder the files sit side by side; in the package the tag grammar is one level up (ner/tag_rules.py,
# shared with the data modules, which must not import the model package).
FOLDER_IMPORTS = (("from ..tag_rules import", "from .tag_rules import"),)

# Margin by which a decoded label that was not the emissions' argmax is lifted above it in pipeline logits.
_PIPELINE_MARGIN = 1e-3


class BertForNer(BertPreTrainedModel):
    """BERT encoder -> dropout -> head (linear or MLP) -> per-token label logits -> decoding.

    Decoding happens inside ``forward`` (the ``predictions`` output, in eval mode), so that it runs where the
    parameters are whole: under DeepSpeed ZeRO-3 or FSDP the CRF's transitions are gathered only there.
    It reads one position per word (the first sub-token): the labelled positions when ``labels`` are given
    (evaluation data is labelled at first sub-tokens only), else ``word_starts``. ``opens_sentence`` and
    ``closes_sentence`` ([batch] bool) say whether a row holds its sentence's first/last word: a window cut
    from a long sentence may start or end inside an entity, so the sentence-edge rules apply only there.
    """

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
            activation = getattr(nn, HEAD_ACTIVATIONS[config.head_activation])()
            layers += [nn.Linear(in_features, width), activation, nn.Dropout(dropout)]
            in_features = width
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, config.num_labels)
        self.crf = None
        self.rules = None  # the scheme's transitions, for constrained decoding without a CRF
        if config.use_crf or config.decoding == "constrained":
            allowed = self._allowed()
            if config.use_crf:
                self.crf = CRF(config.num_labels, allowed)
            else:
                self.rules = TransitionRules(allowed)
        self.post_init()

    def emissions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The classifier's scores [batch, length, labels], before any decoding: what ``forward`` computes first (the
        graph an ONNX export holds; ``decode_emissions`` does the rest)."""
        hidden = self.bert(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return self.classifier(self.head(self.dropout(hidden)))

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters that start from random values on a pretrained encoder: MLP layers, classifier, CRF."""
        modules = [self.head, self.classifier] + ([self.crf] if self.crf is not None else [])
        return [parameter for module in modules for parameter in module.parameters()]

    def _allowed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.device("cpu"):  # from_pretrained builds the model on the meta device; the tables are data
            return allowed_transitions(self.label_list, self.config.tag_scheme)

    @property
    def label_list(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module in self.head and isinstance(module, nn.Linear):
            # A hidden layer at BERT's std 0.02 shrinks the encoder's output about 5x (MiniLM: rms 0.36 -> 0.07),
            # so each optimizer step moves the logits that much less than a linear head's would; 1/sqrt(fan_in)
            # keeps the scale.
            init.normal_(module.weight, std=module.in_features**-0.5)
            init.zeros_(module.bias)
        if isinstance(module, CRF):
            for parameter in (module.transitions, module.start_transitions, module.end_transitions):
                init.uniform_(parameter, -0.1, 0.1)  # skipped for parameters loaded from the checkpoint
        if isinstance(module, TransitionRules):  # buffers that are not saved: refill them from the config
            for buffer, table in zip(module.tables(), self._allowed()):
                init.copy_(buffer, table)

    @property
    def decodes_by_words(self) -> bool:
        """Whether decoding (and a CRF's loss) reads one position per word: a CRF or constrained decoding."""
        return self.crf is not None or self.rules is not None

    def _decode_words(
        self, words: torch.Tensor, mask: torch.Tensor, opens: torch.Tensor | None, closes: torch.Tensor | None
    ) -> torch.Tensor:
        if self.crf is not None:
            return self.crf.decode(words, mask, opens, closes)
        return constrained_decode(words, mask, self.rules.tables(), opens, closes)

    @torch.no_grad()
    def decode(
        self,
        logits: torch.Tensor,
        mask: torch.Tensor,
        opens_sentence: torch.Tensor | None = None,
        closes_sentence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Label ids [batch, length] at the positions in ``mask`` (one per word); 0 elsewhere.

        Argmax, or Viterbi under the CRF's learnt transitions, or under the scheme's valid transitions.
        """
        return decode_emissions(logits, mask, self.crf, self.rules, opens_sentence, closes_sentence)

    def _pipeline_logits(self, emissions: torch.Tensor, predictions: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Scores whose per-token argmax is the decoded tag, for ``pipeline()``: each word's tag at its first sub-token,
        its continuing tag (``I-X``, or ``O``) at the word's later sub-tokens. Where decoding kept the emissions' best
        label nothing changes (the pipeline's score is the emission probability); elsewhere the decoded label is
        lifted just above the best one."""
        if not hasattr(self, "_continuation"):
            self._continuation = torch.tensor(continuation_labels(self.label_list))
        positions = torch.arange(starts.shape[1], device=starts.device).expand_as(starts)
        word_start = torch.where(starts, positions, 0).cummax(dim=1).values  # each token's word's first sub-token
        label = predictions.gather(1, word_start)
        label = torch.where(starts, label, self._continuation.to(label.device)[label])
        scores = emissions.float()
        top = scores.max(dim=-1, keepdim=True).values
        chosen = scores.gather(-1, label[..., None])
        return scores.scatter(-1, label[..., None], torch.maximum(chosen, top + _PIPELINE_MARGIN))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        word_starts: torch.Tensor | None = None,
        word_index: torch.Tensor | None = None,
        opens_sentence: torch.Tensor | None = None,
        closes_sentence: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> NerOutput:
        """``word_index`` ([sentences, words]: flat positions into the ``[rows, length]`` batch of each sentence's
        word starts, -1 past its end; ``ner.training.packing.PackingCollator`` builds it) lets a CRF read sentences packed
        several to a row; ``opens_sentence``/``closes_sentence`` then have one entry per sentence. Without it, each
        row is one sentence whose words are the labelled positions (else ``word_starts``, else every token)."""
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
        index = words = None
        if self.decodes_by_words and (labels is not None or not self.training):
            if word_index is None:  # on the device: as many word slots as sub-tokens
                word_index = word_index_of(_word_starts(logits, labels, word_starts, attention_mask), trim=False)
            index = word_index.to(logits.device)
            words = gather_words(logits, index)
        loss = None
        if labels is not None:
            # Sums over the batch's labelled positions (or sentences), divided by their count, so that a micro-batch
            # without any gives a zero loss (not 0/0 = NaN) without asking the device whether there is one.
            def token_loss() -> torch.Tensor:
                return nn.functional.cross_entropy(
                    logits.view(-1, self.num_labels).float(), labels.view(-1), ignore_index=IGNORE_INDEX, reduction="sum"
                )

            if self.crf is not None:
                word_mask = index >= 0
                sentences = word_mask.any(dim=1).sum().clamp(min=1)
                nll = self.crf.neg_log_likelihood(
                    words, gather_words(labels, index), word_mask, reduction="sum", opens=opens_sentence, closes=closes_sentence
                )
                weight = self.config.crf_token_loss
                loss = (nll + weight * token_loss() if weight else nll) / sentences
            else:
                loss = token_loss() / (labels != IGNORE_INDEX).sum().clamp(min=1)
        predictions = emissions = None
        if not self.training and index is not None:
            decoded = self._decode_words(words, index >= 0, opens_sentence, closes_sentence)
            predictions = scatter_words(decoded, index, logits.shape[:2])
            starts = scatter_words((index >= 0).long(), index, logits.shape[:2]).bool()
            emissions, logits = logits, self._pipeline_logits(logits, predictions, starts)
        elif not self.training:
            predictions = logits.argmax(dim=-1).masked_fill(~_word_starts(logits, labels, word_starts, attention_mask), 0)
        return NerOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            emissions=emissions,
            predictions=predictions,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained``; for a head stock transformers cannot run exactly, also the code that
        runs it (``REMOTE_CODE_FILES``, named in config.json's ``auto_map``) for ``trust_remote_code=True``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        readable_as_umask_allows(save_directory)
        if not self.config.stock_compatible:
            for name in REMOTE_CODE_FILES:
                with open(os.path.join(save_directory, name), "w", encoding="utf-8") as out:
                    out.write(remote_code(name))


def remote_code(name: str) -> str:
    """The source of ``name`` (one of ``REMOTE_CODE_FILES``) as a model folder holds it: this package's module, its
    imports of the tag grammar pointing beside it (``FOLDER_IMPORTS``). A copy in a folder rewrites nothing."""
    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(here, name)
    if not os.path.isfile(source):  # the tag grammar, one level up in the package
        source = os.path.join(os.path.dirname(here), name)
    with open(source, encoding="utf-8") as stream:
        text = stream.read()
    for package_form, folder_form in FOLDER_IMPORTS:
        text = text.replace(package_form, folder_form)
    return text


def decode_emissions(
    logits: torch.Tensor,
    mask: torch.Tensor,
    crf: CRF | None = None,
    rules: TransitionRules | None = None,
    opens: torch.Tensor | None = None,
    closes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Label ids [batch, length] at the positions in ``mask`` (one per word), 0 elsewhere: argmax, or Viterbi over the
    words under ``crf``'s learnt transitions or under ``rules`` (the scheme's valid transitions). Also decodes the
    emissions of an exported ONNX model (``ner.predict.onnx``), outside its graph, exactly as the model does."""
    if crf is None and rules is None:
        return logits.argmax(dim=-1).masked_fill(~mask.bool(), 0)
    index = word_index_of(mask.to(logits.device), trim=False)
    words, word_mask = gather_words(logits, index), index >= 0
    if crf is not None:
        decoded = crf.decode(words, word_mask, opens, closes)
    else:
        decoded = constrained_decode(words, word_mask, rules.tables(), opens, closes)
    return scatter_words(decoded, index, logits.shape[:2])


def readable_as_umask_allows(folder: str | os.PathLike) -> None:
    """Give the weights files in ``folder`` the permissions the umask allows, as any file written with ``open`` has:
    safetensors writes them 0600, so another user could not read a model that config.json invites them to load.
    (``ner.files.readable_as_umask_allows`` does it for one file; this module travels in model folders, where it can
    import only the files copied beside it.)"""
    mask = os.umask(0)
    os.umask(mask)
    for name in os.listdir(folder):
        if name.endswith(".safetensors"):
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def _word_starts(
    logits: torch.Tensor, labels: torch.Tensor | None, word_starts: torch.Tensor | None, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """The positions read as words: the labelled ones (evaluation data is labelled at first sub-tokens only), else
    ``word_starts``, else every attended token."""
    if labels is not None:
        return labels != IGNORE_INDEX
    if word_starts is not None:
        return word_starts.bool()
    if attention_mask is not None and attention_mask.dim() == 2:
        return attention_mask.bool()
    return torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)


def load_model(
    model_name_or_path: str,
    label_list: list[str],
    *,
    head: Mapping[str, Any] | None = None,
    new_head: Mapping[str, tuple[Any, str]] | None = None,
    config_name: str | None = None,
    tag_scheme: str = "IOB2",
    new_classifier: bool = False,
    **hub_kwargs: Any,
) -> BertForNer:
    """A ``BertForNer`` on a pretrained BERT (Hub name or local folder), for ``label_list`` unless it has its own.

    A model whose classifier was already trained (its config names labels other than ``LABEL_i``) keeps
    that classifier, its labels (order included) and its tag scheme, whatever labels the data has: read
    them back from ``model.config.id2label``; gold tags it cannot predict are for the caller to report
    (``ner.data.schemes.unpredictable_tags``). Only ``new_classifier=True`` replaces a trained classifier (and
    CRF) by a new one for ``label_list``, discarding it. ``hub_kwargs`` (``cache_dir``, ``revision``,
    ``token``, ...) go to ``from_pretrained``. ``head`` sets head settings (``ner.model.configuration.HEAD_SETTINGS``);
    those it leaves out come from a trained model's saved config, else from ``new_head`` (setting -> value and
    the line to log when a new classifier takes it: an entry point's defaults), else from their declared
    defaults (which are also what a saved config without the setting is read as).
    """
    head = dict(head or {})
    unknown = [name for name in head if name not in HEAD_SETTINGS]
    if unknown:
        raise ValueError(f"Not head settings: {', '.join(unknown)}. The head settings are {', '.join(HEAD_SETTINGS)}.")
    base = AutoConfig.from_pretrained(config_name or model_name_or_path, **hub_kwargs)
    hub_kwargs = dict(hub_kwargs)
    if base.model_type not in (BertConfig.model_type, NerBertConfig.model_type):
        raise ValueError(
            f"{config_name or model_name_or_path} is a {base.model_type!r} model; this toolkit fine-tunes "
            "BERT-family encoders (model_type 'bert'), e.g. bert-base-cased, SciBERT, BioBERT."
        )
    trained_labels = [base.id2label[i] for i in range(base.num_labels)] if base.id2label else []
    if trained_labels == [f"LABEL_{i}" for i in range(len(trained_labels))]:
        trained_labels = []  # no classifier trained yet, or one whose outputs have no names
        unnamed = any("TokenClassification" in name for name in base.architectures or [])
        if unnamed and not new_classifier and base.num_labels != len(label_list):
            raise ValueError(
                f"{model_name_or_path} has a trained classifier of {base.num_labels} unnamed outputs (LABEL_0 ...), "
                f"but the data has {len(label_list)} labels. Name its outputs (convert_tf_to_pytorch.py --label_list "
                "FILE) to use it, or pass --new_classifier to train a new one (the trained one is discarded)."
            )
        if unnamed and not new_classifier:
            logger.warning(
                "%s has a trained classifier of %d unnamed outputs; they are read as the data's labels in this order: "
                "%s. If that is not the order it was trained with, name them (convert_tf_to_pytorch.py --label_list FILE).",
                model_name_or_path, base.num_labels, " ".join(label_list),
            )
        hub_kwargs["ignore_mismatched_sizes"] = new_classifier and unnamed
    if trained_labels and new_classifier:
        logger.warning(
            "--new_classifier: the trained classifier of %s (labels %s) is discarded; a new one is trained for %s.",
            model_name_or_path, " ".join(trained_labels), " ".join(label_list),
        )
        hub_kwargs["ignore_mismatched_sizes"] = True
        trained_labels = []
    elif trained_labels:
        if trained_labels != label_list:
            logger.info("%s keeps its own %d labels: %s", model_name_or_path, len(trained_labels), " ".join(trained_labels))
        label_list = trained_labels
        tag_scheme = getattr(base, "tag_scheme", None) or tag_scheme
    settings = {key: value for key, value in base.to_dict().items() if key not in ("model_type", "transformers_version")}
    for name, setting in HEAD_SETTINGS.items():
        saved = settings.get(name, setting.default) if trained_labels else setting.default
        if not trained_labels and name in (new_head or {}) and name not in head:
            saved, announcement = new_head[name]
            logger.info("%s", announcement)
        settings[name] = head.get(name, saved)
    if settings["use_crf"] and "decoding" in head:
        raise ValueError(
            f"--decoding {head['decoding']} does not go with a CRF, which decodes with Viterbi over its own transition "
            "scores: leave out --decoding, or pass --use_crf false for a linear head that decodes that way."
        )
    settings.update(
        num_labels=len(label_list),
        id2label=dict(enumerate(label_list)),
        label2id={label: index for index, label in enumerate(label_list)},
        tag_scheme=tag_scheme,
    )
    config = NerBertConfig(**settings)
    return BertForNer.from_pretrained(model_name_or_path, config=config, **hub_kwargs)
