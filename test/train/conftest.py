import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_testlib import make_corpus, make_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(data dir, feats.scp, sentencepiece model) of a 2-language, 16-utterance corpus."""
    root = tmp_path_factory.mktemp("corpus")
    data, feats = make_corpus(root, langs=("en", "fr"), n_per_lang=8)
    return data, feats, make_tokenizer(root, data)
