"""Data: CoNLL, JSON/CSV and span files, Hub datasets, tag schemes and label lists, and the alignment of words to sub-token windows. No torch."""
