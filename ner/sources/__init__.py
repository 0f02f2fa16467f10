"""Where models come from: Hugging Face folders, original releases and TensorFlow checkpoints, staged into folders transformers loads; tokenizers."""
