"""Scoring (WER/CER after Whisper normalisation), RESULTS.md tables and the paper's figures."""
from zlora.scoring.normalize import EnglishTextNormalizer, get_normalizer, normalize
from zlora.scoring.score import (CER_LANGUAGES, RESULT_KEYS, LangScore, ScoreReport, UttScore, metric_for,
                                 score_corpus, score_files, write_outputs)

__all__ = ["CER_LANGUAGES", "RESULT_KEYS", "EnglishTextNormalizer", "LangScore", "ScoreReport", "UttScore",
           "get_normalizer", "metric_for", "normalize", "score_corpus", "score_files", "write_outputs"]
