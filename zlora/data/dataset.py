"""Training data: a Kaldi data dir plus its inputs (dumped features or raw audio), tokenised and
packed per language.

:func:`load_utterances` reads ``text`` / ``utt2lang`` (/ ``utt2dur``) of a data dir and where each
utterance's input is (zlora.data.inputs): with ``feats_type: dumped`` the feature dump's
``feats.scp`` ((T, D) float32 matrices: log-mel from ``dump_feats`` or encoder states from
``dump_encoder``) and its ``utt2num_frames``; with ``raw`` audio from ``dump_audio`` shards or the
data dir's ``wav.scp``/``segments``, lengths from ``utt2num_samples``/``utt2dur`` (log-mel is then
computed on the model's device: zlora.data.frontend). It tokenises the transcripts (cached:
zlora.data.tokens) and computes every utterance's packed length. Everything per utterance is
held in numpy columns (:class:`Corpus`), which is what lets millions of utterances start in
seconds and forked DataLoader workers share them.

Policy for bad data (one rule, documented in docs/reliability.md):
- Problems that make the corpus wrong are errors naming the file and the utterance ids: ``text``
  and ``utt2lang`` holding different ids, utterances without features (in ``feats.scp`` or
  ``utt2num_frames``), a language the run lacks. Nothing is silently dropped; run
  ``utils/fix_data_dir.sh`` or redo the dump. Extra ``feats.scp`` entries are allowed (one dump may
  serve several subsets of a data dir) and counted in the log. Audio problems surface where audio
  is decoded (``dump_feats``, ``dump_audio``, or the raw-audio loader), naming the utterance.
- Utterances that are merely unusable for training are skipped and counted in the log: longer than
  ``data.max_duration``, longer than the encoder accepts (non-chunked Whisper: 30 s), an empty
  transcript, a transcript without a single letter or digit (only punctuation/symbols: nothing to
  learn, and nothing left to score after Whisper normalisation), longer than ``max_tokens`` alone.

:class:`PackDataset` serves one pack per index; :func:`collate_packs` turns a list of packs into
the model's batch dict (keys at :func:`collate_packs`, used by ``SpeechLLM.forward``) plus
:class:`BatchMeta`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from zlora.data.audio import TARGET_SR
from zlora.data.columns import Ragged, StringArray
from zlora.data.inputs import SAMPLES_PER_FRAME, InputIndex, audio_index, feats_index
from zlora.data.kaldi import FIELD_COUNTS, DataDir, DataDirError, read_table, read_utt2dur
from zlora.data.packing import pack_lengths
from zlora.data.tokens import transcript_tokens
from zlora.utils.cli import UserError
from zlora.utils.log import get_logger

log = get_logger("data")


class LengthModel(Protocol):
    """What the data pipeline needs from a SpeechLLM (zlora.models.SpeechLLM has all of it)."""
    tokenizer: object

    def speech_token_count(self, n_frames: int) -> int: ...

    def prompt_ids(self, lang: str) -> list[int]: ...

    # Optional: ``max_input_frames() -> int | None`` (frames the encoder accepts; None = any).


@dataclass
class Utterance:
    utt: str
    lang: int                # index into the run's languages
    n_frames: int            # rows of the feature matrix (mel frames for raw audio)
    seconds: float
    text_ids: list[int]      # transcript tokens, without eos (the model appends it)
    n_tokens: int            # packed length: speech tokens + prompt + transcript + eos


@dataclass
class Corpus:
    """The usable utterances of a data dir, as columns (zlora.data.columns: workers share them
    without copies), row i = one utterance; ``index`` says where each row's input is."""
    ids: StringArray
    lang: np.ndarray                 # (n,) int16 language indices
    n_frames: np.ndarray             # (n,) int64 input rows (mel frames, or cached encoder states)
    seconds: np.ndarray              # (n,) float64
    text_ids: Ragged                 # transcript tokens per row, without eos
    n_tokens: np.ndarray             # (n,) int64 packed length
    index: InputIndex | None = None
    skipped: Counter = field(default_factory=Counter)   # reason -> count
    skipped_examples: dict = field(default_factory=dict)  # reason -> first utterance id

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_utterances(cls, utts: Sequence[Utterance], index: InputIndex | None = None) -> "Corpus":
        return cls(StringArray.from_list([u.utt for u in utts]),
                   np.array([u.lang for u in utts], dtype=np.int16),
                   np.array([u.n_frames for u in utts], dtype=np.int64),
                   np.array([u.seconds for u in utts], dtype=np.float64),
                   Ragged.from_lists([u.text_ids for u in utts]),
                   np.array([u.n_tokens for u in utts], dtype=np.int64), index)

    @property
    def utterances(self) -> list[Utterance]:
        """The rows as Utterance objects (for small corpora, tests and benchmarks)."""
        return [self.utterance(i) for i in range(len(self))]

    def utterance(self, i: int) -> Utterance:
        return Utterance(self.ids[i], int(self.lang[i]), int(self.n_frames[i]), float(self.seconds[i]),
                         self.text_ids[i].tolist(), int(self.n_tokens[i]))

    def take(self, rows: np.ndarray) -> "Corpus":
        """The corpus restricted to ``rows`` (in that order)."""
        return Corpus(self.ids.take(rows), self.lang[rows], self.n_frames[rows], self.seconds[rows],
                      self.text_ids.take(rows), self.n_tokens[rows],
                      None if self.index is None else self.index.take(rows),
                      Counter(self.skipped), dict(self.skipped_examples))

    def describe_skips(self) -> str:
        if not self.skipped:
            return "no utterance skipped"
        return "; ".join(f"{n} skipped: {reason} (e.g. {self.skipped_examples[reason]})"
                         for reason, n in sorted(self.skipped.items()))


def as_corpus(utts) -> Corpus:
    return utts if isinstance(utts, Corpus) else Corpus.from_utterances(list(utts))


def load_utterances(data_dir: str | Path, feats_scp: str | Path | None, model: LengthModel,
                    languages: Sequence[str], max_tokens: int, max_duration: float | None,
                    frames_per_second: float, feats_type: str = "dumped",
                    token_cache: str | Path | None = None, is_main: bool = True,
                    barrier: Callable[[], None] = lambda: None, check_finite: bool = True) -> Corpus:
    """Read, check, tokenise and measure every utterance of ``data_dir`` (see module doc).

    ``feats_type`` dumped: ``feats_scp`` is a feature dump; raw: an utterance-level audio table
    (dump_audio's audio.scp) or None for the data dir's wav.scp + segments. ``token_cache``: a
    directory for the transcript tokens (zlora.data.tokens; None: tokenise every time). With
    several ranks, ``is_main``/``barrier`` let one rank fill the cache for all."""
    dd = DataDir(data_dir)
    utts, texts, langs = read_ids(dd)
    durations = _aligned_floats(dd.path / "utt2dur", utts)
    if feats_type == "dumped":
        if feats_scp is None:
            raise UserError("data.feats_type dumped needs a feats.scp (python -m zlora.bin.dump_feats)")
        index = feats_index(feats_scp, utts, check_finite, in_file=dd.path / "text")
        check_declared_lengths(index)
        frames = index.length
        seconds = np.where(np.isnan(durations), frames / frames_per_second, durations)
    else:
        index = audio_index(dd.path, feats_scp, utts, durations)
        frames = index.length // SAMPLES_PER_FRAME
        seconds = index.length / TARGET_SR
    if index.extra > 0:
        log.info("%s: %d entries belong to no utterance of %s (ignored)", index.source, index.extra,
                 dd.path / "text")
    lang_index = {c: i for i, c in enumerate(languages)}
    unknown = [k for k, c in enumerate(langs) if c not in lang_index]
    if unknown:
        k = unknown[0]
        raise DataDirError(f"{dd.path / 'utt2lang'}: utterance '{utts[k]}' has language '{langs[k]}', "
                           f"which is not in this run's languages ({', '.join(languages)})")
    lang = np.array([lang_index[c] for c in langs], dtype=np.int16)
    ids, alnum = transcript_tokens(dd.path / "text", texts, model.tokenizer, token_cache, is_main, barrier)
    prompt_len = np.array([len(model.prompt_ids(c)) for c in languages], dtype=np.int64)
    n_tok = speech_token_counts(model, frames) + prompt_len[lang] + ids.lengths() + 1
    corpus = Corpus(StringArray.from_list(utts), lang, frames, seconds.astype(np.float64), ids, n_tok, index)
    max_frames = model.max_input_frames() if hasattr(model, "max_input_frames") else None
    too_short = index.length <= MIN_RAW_SAMPLES if feats_type == "raw" else None
    reasons = skip_reasons(corpus, alnum, max_tokens, max_duration, max_frames, frames_per_second, too_short)
    keep = np.flatnonzero(reasons < 0)
    skipped, examples = Counter(), {}
    for k in np.flatnonzero(reasons >= 0):          # only the skipped rows: few
        reason = _REASONS[reasons[k]](max_tokens, max_duration, max_frames, frames_per_second)
        skipped[reason] += 1
        examples.setdefault(reason, utts[k])
    if not len(keep):
        raise UserError(f"{dd.path}: no usable utterance "
                        f"({Corpus(corpus.ids, lang, frames, seconds, ids, n_tok, None, skipped, examples).describe_skips()})")
    out = corpus if len(keep) == len(corpus) else corpus.take(keep)
    out.skipped, out.skipped_examples = skipped, examples
    return out


def read_ids(dd: DataDir) -> tuple[list[str], list[str], list[str]]:
    """(utterance ids, transcripts, language codes) in text order; text and utt2lang must hold
    the same ids. Errors name the file, the number of ids and the first few of them."""
    for name in ("text", "utt2lang"):
        if not dd.has(name):
            raise DataDirError(f"{dd.path}: required file {name} does not exist")
    utts, texts = read_table(dd.path / "text", FIELD_COUNTS["text"])
    lang_keys, langs = read_table(dd.path / "utt2lang", (2, 2))
    if lang_keys != utts:
        lang_set, text_set = set(lang_keys), set(utts)
        only_text = [u for u in utts if u not in lang_set]
        if only_text:
            raise DataDirError(f"{dd.path / 'utt2lang'}: no entry for utterance {_ids(only_text)} "
                               f"({len(only_text)} of {len(utts)} in {dd.path / 'text'}); run "
                               "utils/fix_data_dir.sh")
        only_lang = [u for u in lang_keys if u not in text_set]
        raise DataDirError(f"{dd.path / 'text'}: no transcript for utterance {_ids(only_lang)} "
                           f"({len(only_lang)} of {len(lang_keys)} in {dd.path / 'utt2lang'}); run "
                           "utils/fix_data_dir.sh")
    return utts, texts, langs


def _aligned_floats(path: Path, utts: list[str]) -> np.ndarray:
    """(n,) seconds per utterance from a table such as utt2dur, NaN where it has none (or no file)."""
    if not path.is_file():
        return np.full(len(utts), np.nan)
    keys, values = read_table(path, (2, 2))
    if keys != utts:
        pos = dict(zip(keys, values))
        values = [pos.get(u, "nan") for u in utts]
    try:
        out = np.array(values, dtype=np.float64)
    except ValueError:
        read_utt2dur(path)          # raises naming the line
        raise
    bad = np.flatnonzero(~np.isnan(out) & ~(out > 0) | np.isinf(out))
    if len(bad):
        read_utt2dur(path)
    return out


def speech_token_counts(model: LengthModel, frames: np.ndarray) -> np.ndarray:
    """(n,) speech tokens for (n,) frame counts: one model call per distinct length (a few
    thousand at most), not per utterance."""
    values, inverse = np.unique(frames, return_inverse=True)
    counts = np.array([model.speech_token_count(int(n)) for n in values], dtype=np.int64)
    return counts[inverse]


FRAME_CHECKS = 8     # utterances whose declared length is compared with their matrix up front


def check_declared_lengths(index) -> None:
    """utt2num_frames against the real matrices of up to FRAME_CHECKS utterances spread over the
    set (first and last included): a stale file (an older dump) fails before training starts.
    Every other utterance is checked when its matrix is read (InputIndex.read)."""
    n = len(index)
    if not n:
        return
    k = min(FRAME_CHECKS, n)
    finite, index.check_finite = index.check_finite, False      # lengths only: NaN is found at use
    try:
        for row in sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}):
            index.read(row)
    finally:
        index.check_finite = finite


def _ids(ids: list[str]) -> str:
    return ", ".join(f"'{u}'" for u in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


# Skip reasons in order of precedence: the first that applies is the one counted.
_REASONS = (
    lambda mt, md, mf, fps: f"longer than data.max_duration={md:g} s",
    # The full-context encoder would fail on it mid-run (Whisper's 30-s positional table).
    lambda mt, md, mf, fps: (f"longer than the encoder accepts ({mf} frames = {mf / fps:g} s; use "
                             "chunked encoding)"),
    lambda mt, md, mf, fps: "empty transcript",
    # Only punctuation/symbols: no speech content to learn, and Whisper normalisation leaves
    # nothing to score (zlora.scoring excludes such references too).
    lambda mt, md, mf, fps: "transcript has no letter or digit (punctuation only)",
    lambda mt, md, mf, fps: f"longer than data.max_tokens={mt} on its own",
    lambda mt, md, mf, fps: f"audio of at most {MIN_RAW_SAMPLES} samples: too short for a log-mel frame",
)
MIN_RAW_SAMPLES = 200           # log-mel needs more than n_fft / 2 samples (zlora.data.features)


def skip_reasons(c: Corpus, alnum: np.ndarray, max_tokens: int, max_duration: float | None,
                 max_frames: int | None, frames_per_second: float,
                 too_short: np.ndarray | None = None) -> np.ndarray:
    """(n,) int8: -1 = usable, else the index of the first reason in _REASONS that applies.
    ``too_short``: (n,) bool, raw audio with no log-mel frame."""
    n_text = c.text_ids.lengths()
    conditions = [
        c.seconds > max_duration if max_duration is not None else np.zeros(len(c), bool),
        c.n_frames > max_frames if max_frames is not None else np.zeros(len(c), bool),
        n_text == 0,
        ~alnum,
        c.n_tokens > max_tokens,
        too_short if too_short is not None else np.zeros(len(c), bool),
    ]
    out = np.full(len(c), -1, dtype=np.int8)
    for k in reversed(range(len(conditions))):       # earlier reasons overwrite later ones
        out[conditions[k]] = k
    return out


def _skip_reason(seconds: float, max_duration: float | None, ids: list[int], n_tok: int,
                 max_tokens: int, transcript: str | None = None, n_frames: int = 0,
                 max_frames: int | None = None, frames_per_second: float = 100.0) -> str | None:
    """One utterance's skip reason (or None): the scalar form of :func:`skip_reasons`."""
    flags = [max_duration is not None and seconds > max_duration,
             max_frames is not None and n_frames > max_frames, not ids,
             transcript is not None and not any(ch.isalnum() for ch in transcript), n_tok > max_tokens, False]
    k = next((k for k, f in enumerate(flags) if f), None)
    return None if k is None else _REASONS[k](max_tokens, max_duration, max_frames, frames_per_second)


# ---- packing -------------------------------------------------------------------------------------
def pack_corpus(utts, max_tokens: int) -> tuple[list[list[int]], dict[int, list[int]]]:
    """Language-homogeneous packs: (packs as utterance indices, {lang: pack ids}).
    ``utts``: a Corpus or a sequence of Utterance."""
    c = as_corpus(utts)
    packs: list[list[int]] = []
    by_lang: dict[int, list[int]] = {}
    for lang in np.unique(c.lang).tolist():
        members = np.flatnonzero(c.lang == lang)
        for group in pack_lengths(c.n_tokens[members], max_tokens):
            by_lang.setdefault(lang, []).append(len(packs))
            packs.append(members[group].tolist())
    return packs, by_lang


def pack_blocks(c: Corpus, max_tokens: int, block_utts: int
                ) -> tuple[list[list[int]], dict[int, list[int]], dict[int, list[list[int]]]]:
    """Packs for sequential reading: rows in storage order (shard file, then offset) are cut into
    blocks of ``block_utts`` consecutive utterances of one shard and one language, and packed
    (best-fit decreasing) within each block. Returns (packs, {lang: pack ids}, {lang: blocks as
    lists of pack ids}); a block's packs are in the order of their first utterance on disk."""
    # storage order within each (shard, language): a shard of several languages (an ark made
    # elsewhere) becomes one forward pass per language instead of runs of one utterance
    order = np.lexsort((c.index.offset, c.lang, c.index.file_id))
    key = c.index.file_id[order].astype(np.int64) * 65536 + c.lang[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    packs: list[list[int]] = []
    by_lang: dict[int, list[int]] = {}
    blocks: dict[int, list[list[int]]] = {}
    for run in np.split(order, cuts):
        lang = int(c.lang[run[0]])
        for start in range(0, len(run), block_utts):
            rows = run[start:start + block_utts]                 # in storage order
            block = []
            for group in sorted(pack_lengths(c.n_tokens[rows], max_tokens), key=min):
                block.append(len(packs))
                by_lang.setdefault(lang, []).append(len(packs))
                packs.append(sorted(rows[group].tolist()))
            blocks.setdefault(lang, []).append(block)
    return packs, by_lang, blocks


def sequential_packs(utts, max_tokens: int) -> list[list[int]]:
    """Validation packs: utterances in corpus order, a new pack at each language change or when
    the next utterance would not fit (deterministic, no sorting)."""
    c = as_corpus(utts)
    lang, n_tok = c.lang.tolist(), c.n_tokens.tolist()
    packs: list[list[int]] = []
    total = max_tokens + 1
    for i in range(len(c)):
        if packs and lang[packs[-1][0]] == lang[i] and total + n_tok[i] <= max_tokens:
            packs[-1].append(i)
            total += n_tok[i]
        else:
            packs.append([i])
            total = n_tok[i]
    return packs


class PackDataset(torch.utils.data.Dataset):
    """Index -> one pack: a list of {utt, feats (T, D) or wave (N,) float32, lang, text_ids,
    seconds, n_tokens}.

    Everything per utterance lives in numpy columns (the corpus, its input index, the packs), so
    a forked DataLoader worker shares them with the training process and its memory does not
    grow over an epoch; inputs are read through the index's cached file descriptors.

    Indices are (pack_id, epoch, batch_index) tuples from the samplers; with ``chunk_seconds`` (the
    encoder's training chunk durations, §IV-F) each utterance also gets a chunk duration drawn
    from a generator seeded by (seed, epoch, batch, pack), so a resumed run draws the same ones.
    ``corpus``: a Corpus with its index, or (older callers) a sequence of Utterance plus the
    ``feats_scp`` to read them from.
    """

    def __init__(self, corpus, packs: Sequence[Sequence[int]], feats_scp: str | Path | None = None,
                 check_finite: bool = True, chunk_seconds: Sequence[float] | None = None, seed: int = 0):
        c = as_corpus(corpus)
        if c.index is None:
            if feats_scp is None:
                raise ValueError("PackDataset: a corpus without an input index needs feats_scp")
            c.index = feats_index(feats_scp, c.ids.tolist(), check_finite)
        c.index.check_finite = check_finite
        self.corpus, self.index = c, c.index
        self.packs = Ragged.from_lists(packs, dtype=np.int64)
        self.chunk_seconds = list(chunk_seconds) if chunk_seconds else None
        self.seed = seed
        self.input_key = "feats" if c.index.kind == "feats" else "wave"

    def __len__(self) -> int:
        return len(self.packs)

    def pack_tokens(self, pack_id: int) -> int:
        return int(self.corpus.n_tokens[self.packs[pack_id]].sum())

    def all_pack_tokens(self) -> np.ndarray:
        """(n_packs,) real tokens per pack."""
        sums = np.add.reduceat(self.corpus.n_tokens[self.packs.flat], self.packs.offsets[:-1]) \
            if len(self.packs.flat) else np.zeros(0, np.int64)
        return sums.astype(np.int64)

    def __getitem__(self, key) -> list[dict]:
        pack_id, epoch, batch = key if isinstance(key, tuple) else (key, 0, 0)
        rng = np.random.default_rng([self.seed, epoch, batch, pack_id]) if self.chunk_seconds else None
        rows = self.packs[pack_id].tolist()
        inputs = {r: self.index.read(r) for r in self.index.read_order(rows)}   # forward on disk
        c = self.corpus
        items = []
        for r in rows:
            item = {"utt": c.ids[r], self.input_key: inputs[r], "lang": int(c.lang[r]),
                    "text_ids": c.text_ids[r].tolist(), "seconds": float(c.seconds[r]),
                    "n_tokens": int(c.n_tokens[r]), "epoch": epoch, "batch": batch}
            if rng is not None:
                item["chunk_seconds"] = float(self.chunk_seconds[int(rng.integers(len(self.chunk_seconds)))])
            items.append(item)
        return items


@dataclass
class BatchMeta:
    utts: list[str]
    real_tokens: int         # sum of packed lengths
    padded_tokens: int       # packs x longest pack (what the LLM computes over)
    audio_seconds: float
    epoch: int
    batch: int
    n_packs: int = 1


def collate_packs(packs: list[list[dict]]) -> tuple[dict, BatchMeta]:
    """Packs -> (model batch dict, BatchMeta).

    Batch: feats (N_utt, T_max, D) zero-padded and feat_lens (N_utt,) -- or, for raw audio,
    wave (sum N_i,) float32 (the utterances back to back, unpadded) and wave_lens (N_utt,), which
    zlora.data.frontend turns into feats/feat_lens on the model's device --, lang_ids (N_utt,),
    text_ids list[list[int]], pack_ids (N_utt,) (utterances of one pack form one LLM row, in
    order), and chunk_seconds (N_utt,) when the dataset draws them.
    """
    items = [(p, it) for p, pack in enumerate(packs) for it in pack]
    if "wave" in items[0][1]:
        batch = {"wave": torch.from_numpy(np.concatenate([it["wave"] for _, it in items])),
                 "wave_lens": torch.tensor([len(it["wave"]) for _, it in items], dtype=torch.long)}
    else:
        t_max = max(it["feats"].shape[0] for _, it in items)
        dim = items[0][1]["feats"].shape[1]
        feats = torch.zeros(len(items), t_max, dim, dtype=torch.float32)
        for k, (_, it) in enumerate(items):
            feats[k, :it["feats"].shape[0]] = torch.from_numpy(it["feats"])
        batch = {"feats": feats,
                 "feat_lens": torch.tensor([it["feats"].shape[0] for _, it in items], dtype=torch.long)}
    batch.update({
        "lang_ids": torch.tensor([it["lang"] for _, it in items], dtype=torch.long),
        "text_ids": [list(it["text_ids"]) for _, it in items],
        "pack_ids": torch.tensor([p for p, _ in items], dtype=torch.long),
    })
    if "chunk_seconds" in items[0][1]:
        batch["chunk_seconds"] = torch.tensor([it["chunk_seconds"] for _, it in items], dtype=torch.float32)
    pack_tok = [sum(it["n_tokens"] for it in pack) for pack in packs]
    meta = BatchMeta(utts=[it["utt"] for _, it in items], real_tokens=sum(pack_tok),
                     padded_tokens=len(pack_tok) * max(pack_tok),
                     audio_seconds=float(sum(it["seconds"] for _, it in items)),
                     epoch=items[0][1]["epoch"], batch=items[0][1]["batch"], n_packs=len(packs))
    return batch, meta


def describe_lengths(utts, languages: Sequence[str]) -> str:
    """One line per language: utterances, hours, tokens (for the log)."""
    c = as_corpus(utts)
    lines = []
    for k, lang in enumerate(languages):
        sel = c.lang == k
        if sel.any():
            lines.append(f"{lang}: {int(sel.sum())} utts, {c.seconds[sel].sum() / 3600:.2f} h, "
                         f"{int(c.n_tokens[sel].sum())} tokens")
    return "; ".join(lines)
