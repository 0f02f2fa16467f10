"""Prediction: ``NerPredictor`` (a trained folder ready to tag), the input and output formats of ``python -m ner
predict`` (``io``), sharded runs under ``accelerate launch`` (``sharded``) and the command itself (``cli``)."""

from ner.predict.predictor import Entity, NerPredictor, Tagged

__all__ = ["Entity", "NerPredictor", "Tagged"]
