"""mini12: a 12-language, long-tailed speech corpus synthesised offline with espeak-ng.

It mirrors the paper's SFT target set (§V-A, Table I): high-resource de es fr ru vi it en zh and
low-resource ar ja ko pt. Thai is left out because espeak-ng garbles its vowel marks; Mandarin is
spoken from Hanzi by the ``cmn-latn-pinyin`` voice; Japanese is written in kana only (espeak-ng
reads each kanji as an English letter name).

Transcripts (see ``templates``) are built from num2words numbers (``numbers.zh_number`` for
Chinese, which num2words lacks), Babel/CLDR month, weekday and country names, and wordfreq's
frequent words. They contain only the language's letters and single spaces (none in zh/ja), and
espeak-ng reads exactly the transcript.

Splits written by ``build_corpus`` (Kaldi data dirs; default utterances per language):

==================  ==========  ==========================================================
split               per lang    what
==================  ==========  ==========================================================
foundation          400 (all)   stage 1: balanced over all 12 languages, foundation domain
foundation_dev      10 (all)    stage-1 validation, foundation domain
train_high          700 (high)  stage 2: target domain, the 8 high-resource languages
train_low_full      60 (low)    stage 2: target domain, ar ja ko pt; the recipe cuts it with
                                ``utils/subset_data_dir.sh`` to >= 100x fewer hours than a
                                high-resource language has (measured: 700 utts = 16-22 min,
                                so 1/100 is ~11 s, ~6 utterances; 60 allow down to ~1/10)
dev                 50 (all)    target domain, training voices, transcripts unseen in train
test                50 (all)    target domain, held-out voices, transcripts unseen anywhere
==================  ==========  ==========================================================

Measured with the defaults (espeak-ng 1.51): target utterances average 1.4-2.6 s, foundation
ones 1.9-2.9 s; 12,360 utterances, 6.3 h, ~720 MB, ~265 CPU-seconds: 7.7 min of wall time on a
2-core machine shared with other jobs (load 5-7); ~2.5 min expected on two idle cores.

Why a separate foundation set (the design choice of the recipe's two stages): the paper adapts
a pretrained Qwen3 that already reads and writes all twelve languages; the demo's LLM is tiny and
trained from scratch, and knows only what it is shown. Stage 1 therefore trains on a *balanced*
set over all twelve languages, so every language's words, numbers and names are known, but in a
different domain from stage 2, as the paper's stages came from different corpora:

- text: foundation utterances are runs of words, of numbers or of names with no phrase
  structure; the target set uses phrase templates (dates, "<number> <word>", "from <country> to
  <country>", "<month> <year>") with each language's glue words;
- voices: the non-test espeak-ng variants are split in two disjoint pools, one for the
  foundation and one for the target sets (``foundation_disjoint_voices``);
- style: foundation speech is slower and flatter with pauses between words (-s 120-155, -p
  35-65, -g 10-40 ms); target speech is faster and more varied (-s 150-210, -p 20-80).

Stage 2 then meets a domain shift on a long-tailed distribution, where encoder adapters have
something to adapt and the low-resource languages have very little in-domain data.

Speakers are voice variants: speaker id ``<lang>-<variant>`` is a prefix of every utterance id
``<lang>-<variant>-<splittag><index>``, so utt2spk and spk2utt sort consistently. Each speaker has
its own base speed and pitch; each utterance jitters them. ``n_test_variants`` variants are held
out for test only. Everything is drawn from the seed: the same seed gives the same texts, voices
and audio bytes.
"""
from zlora.data.synth.config import CountsConfig, StyleConfig, SynthConfig
from zlora.data.synth.corpus import build_corpus, corpus_stats
from zlora.data.synth.espeak import SynthError, UttSpec, list_variants, synthesize
from zlora.data.synth.lexicon import Lexicon, build_lexicon
from zlora.data.synth.numbers import spell_number, zh_number
from zlora.data.synth.plan import SPLIT_NAMES, SPLITS, partition_variants, plan_corpus
from zlora.data.synth.templates import LANGUAGES, make_text
from zlora.data.synth.text import normalise_transcript, script_ok

__all__ = [
    "CountsConfig", "StyleConfig", "SynthConfig", "build_corpus", "corpus_stats", "SynthError",
    "UttSpec", "list_variants", "synthesize", "Lexicon", "build_lexicon", "spell_number",
    "zh_number", "SPLIT_NAMES", "SPLITS", "partition_variants", "plan_corpus", "LANGUAGES",
    "make_text", "normalise_transcript", "script_ok",
]
