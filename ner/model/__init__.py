"""The model: configuration (``NerBertConfig``, the head settings), ``BertForNer`` and its CRF, and the tokenizer a
model folder carries for ``pipeline()``. Importing it registers the model type ``ner_bert`` with transformers' Auto
classes, so that ``AutoConfig``, ``AutoModelForTokenClassification`` and ``pipeline()`` load any folder this toolkit
writes."""

from transformers import AutoConfig, AutoModelForTokenClassification

from .configuration import NerBertConfig
from .modeling import BertForNer, load_model

AutoConfig.register(NerBertConfig.model_type, NerBertConfig)
AutoModelForTokenClassification.register(NerBertConfig, BertForNer)

__all__ = ["BertForNer", "NerBertConfig", "load_model"]
