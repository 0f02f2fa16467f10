"""What a run writes: scores by split, reports, plots, the model card, the Hub push."""
