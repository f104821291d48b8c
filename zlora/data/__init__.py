"""Data: Kaldi data directories, audio loading, Whisper log-mel features (and, from other modules,
datasets, packing and samplers)."""
