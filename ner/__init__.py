"""NER fine-tuning for BERT-family encoders on CoNLL-style files.

The package in layers, imports running one way (``README.md``, "Layout"): the base (``errors``, ``files``,
``limits``, ``tag_rules``); ``ner.data`` (files, tag schemes, alignment; no torch); ``ner.model`` (importing it
registers the model type ``ner_bert`` with transformers' Auto classes); ``ner.sources`` (model layouts, tokenizers,
TensorFlow checkpoints); ``ner.training``; ``ner.predict``; ``ner.outputs``. ``import ner`` itself loads nothing.
"""
