"""Batched, resumable, multi-job decoding of Kaldi data dirs (known-language mode)."""
