"""NER fine-tuning for BERT-family encoders on CoNLL-style files."""
