"""Transcript tokens cached per (text, tokenizer) (zlora/data/tokens.py)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_testlib import make_corpus, make_tokenizer  # noqa: E402

from zlora.data.kaldi import read_table  # noqa: E402
from zlora.data.tokens import has_alnum, transcript_tokens  # noqa: E402
from zlora.models.tokenizer import SentencePieceTokenizer  # noqa: E402


class Counting:
    """A tokenizer that counts its calls and has a settable fingerprint."""

    def __init__(self, inner, fp="v1"):
        self.inner, self.fp, self.calls = inner, fp, 0

    def encode(self, text):
        self.calls += 1
        return self.inner.encode(text)

    def fingerprint(self):
        return self.fp


def test_cached_once_reused_and_redone_when_text_or_tokenizer_change(tmp_path):
    data, _ = make_corpus(tmp_path, n_per_lang=5)
    tok = SentencePieceTokenizer(make_tokenizer(tmp_path, data))
    _, texts = read_table(data / "text")
    cache = tmp_path / "cache"
    counting = Counting(tok)
    ids, alnum = transcript_tokens(data / "text", texts, counting, cache)
    assert [ids[i].tolist() for i in range(len(texts))] == [tok.encode(t) for t in texts]
    assert alnum.all() and counting.calls == len(texts) and len(list(cache.glob("*.npz"))) == 1
    again, _ = transcript_tokens(data / "text", texts, counting, cache)      # from the cache
    assert counting.calls == len(texts) and np.array_equal(again.flat, ids.flat)
    counting.fp = "v2"                                                       # another tokenizer
    transcript_tokens(data / "text", texts, counting, cache)
    assert counting.calls == 2 * len(texts)
    lines = (data / "text").read_text().splitlines()                         # an edited transcript
    lines[0] = lines[0].split()[0] + " ?!"
    (data / "text").write_text("\n".join(lines) + "\n")
    _, texts = read_table(data / "text")
    ids, alnum = transcript_tokens(data / "text", texts, counting, cache)
    assert counting.calls == 3 * len(texts) and not alnum[0] and alnum[1:].all()
    assert ids[0].tolist() == tok.encode(" ?!".strip())
    assert len(list(cache.glob("*.npz"))) == 3


def test_unreadable_cache_is_recomputed_and_no_fingerprint_means_no_cache(tmp_path):
    data, _ = make_corpus(tmp_path, n_per_lang=3)
    tok = SentencePieceTokenizer(make_tokenizer(tmp_path, data))
    _, texts = read_table(data / "text")
    cache = tmp_path / "cache"
    transcript_tokens(data / "text", texts, tok, cache)
    (path,) = cache.glob("*.npz")
    path.write_bytes(b"not a zip file")
    counting = Counting(tok, fp=tok.fingerprint())
    ids, _ = transcript_tokens(data / "text", texts, counting, cache)
    assert counting.calls == len(texts) and ids[1].tolist() == tok.encode(texts[1])

    class Plain:                                          # a tokenizer that cannot say what it is
        encode = staticmethod(tok.encode)

    transcript_tokens(data / "text", texts, Plain(), tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_has_alnum_is_str_isalnum():
    texts = ["hello", "?! --", "¿ ,", "٣", "日本", "_", "a_", ""]
    assert has_alnum(texts).tolist() == [any(c.isalnum() for c in t) for t in texts]


def test_tokenizer_batch_encoding_and_fingerprint(tmp_path):
    from zlora.models.tokenizer import train_sentencepiece

    data, _ = make_corpus(tmp_path, n_per_lang=5)
    tok = SentencePieceTokenizer(make_tokenizer(tmp_path, data))
    _, texts = read_table(data / "text")
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.fingerprint() == SentencePieceTokenizer(tok.model_file).fingerprint()
    other = train_sentencepiece([data / "text"], tmp_path / "other", 60, languages=["en", "fr"])
    assert other.fingerprint() != tok.fingerprint()


def test_cache_tokens_verb_fills_the_cache_training_reads(tmp_path):
    from zlora.bin import cache_tokens
    from zlora.data.dataset import load_utterances
    from zlora.data.tokens import cache_dir_for

    data, feats = make_corpus(tmp_path, n_per_lang=4)
    sp = make_tokenizer(tmp_path, data)
    assert cache_tokens.main(["--tokenizer", sp, str(data)]) == 0
    (cached,) = cache_dir_for(data).glob("*.npz")
    stamp = cached.stat().st_mtime_ns
    assert cache_tokens.main(["--tokenizer", sp, str(data)]) == 0      # current: kept
    assert cached.stat().st_mtime_ns == stamp

    class NoTokenising(SentencePieceTokenizer):
        def encode(self, text):
            raise AssertionError("tokenised although the cache is current")

        encode_batch = encode

    class Model:
        tokenizer = NoTokenising(sp)

        def speech_token_count(self, n):
            return n // 8

        def prompt_ids(self, lang):
            return [1, 2]

    corpus = load_utterances(data, feats, Model(), ["en", "fr"], 1000, None, 100.0,
                             token_cache=cache_dir_for(data))
    assert len(corpus) == 8 and corpus.text_ids[0].tolist() == SentencePieceTokenizer(sp).encode(
        (data / "text").read_text().splitlines()[0].split(" ", 1)[1])
