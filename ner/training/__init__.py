"""Training: the arguments and the recipe of defaults, the Trainer and its batches (packing, attention), checkpoints, metrics."""
