"""Training data: a Kaldi data dir plus dumped features, tokenised and packed per language.

:func:`load_utterances` reads ``text`` / ``utt2lang`` (/ ``utt2dur``) of a data dir, the feature
dump's ``feats.scp`` (kaldiio; (T, D) float32 matrices: log-mel from ``dump_feats`` or encoder
states from ``dump_encoder``) and its ``utt2num_frames``, tokenises the transcripts with the
model's tokenizer and computes every utterance's packed length.

Policy for bad data (one rule, documented in docs/reliability.md):
- Problems that make the corpus wrong are errors naming the file and the utterance ids: ``text``
  and ``utt2lang`` holding different ids, utterances without features (in ``feats.scp`` or
  ``utt2num_frames``), a language the run lacks. Nothing is silently dropped; run
  ``utils/fix_data_dir.sh`` or redo the dump. Extra ``feats.scp`` entries are allowed (one dump may
  serve several subsets of a data dir) and counted in the log. ``wav.scp`` is not read here: audio
  problems surface in ``dump_feats``, which fails naming the utterance.
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
from typing import Protocol, Sequence

import numpy as np
import torch

from zlora.data.kaldi import DataDir, DataDirError, read_kv
from zlora.data.packing import pack_lengths
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
    n_frames: int            # rows of the feature matrix
    seconds: float
    text_ids: list[int]      # transcript tokens, without eos (the model appends it)
    n_tokens: int            # packed length: speech tokens + prompt + transcript + eos


@dataclass
class Corpus:
    utterances: list[Utterance]
    skipped: Counter = field(default_factory=Counter)   # reason -> count
    skipped_examples: dict = field(default_factory=dict)  # reason -> first utterance id

    def describe_skips(self) -> str:
        if not self.skipped:
            return "no utterance skipped"
        return "; ".join(f"{n} skipped: {reason} (e.g. {self.skipped_examples[reason]})"
                         for reason, n in sorted(self.skipped.items()))


def read_num_frames(feats_scp: Path, feats: dict) -> dict[str, int]:
    """Frames per utterance from the dump's ``utt2num_frames``, else from the matrices (slow)."""
    u2n = feats_scp.parent / "utt2num_frames"
    if u2n.is_file():
        out = {}
        for utt, value in read_kv(u2n, 2).items():
            try:
                out[utt] = int(value)
            except ValueError:
                raise DataDirError(f"{u2n}: utterance '{utt}': frame count {value!r} is not an integer")
        return out
    log.warning("%s not found; reading every matrix for its length", u2n)
    return {utt: int(feats[utt].shape[0]) for utt in feats}


def load_utterances(data_dir: str | Path, feats_scp: str | Path, model: LengthModel,
                    languages: Sequence[str], max_tokens: int, max_duration: float | None,
                    frames_per_second: float) -> Corpus:
    """Read, check, tokenise and measure every utterance of ``data_dir`` (see module doc)."""
    import kaldiio

    dd = DataDir(data_dir)
    feats_scp = Path(feats_scp)
    if not feats_scp.is_file():
        raise UserError(f"{feats_scp}: features not found (run python -m zlora.bin.dump_feats)")
    feats = kaldiio.load_scp(str(feats_scp))
    text, utt2lang, utt2dur = dd.text, dd.utt2lang, dd.utt2dur
    frames = read_num_frames(feats_scp, feats)
    check_ids(dd, text, utt2lang, feats, frames, feats_scp)
    check_num_frames(feats, frames, list(text), feats_scp)
    lang_index = {c: i for i, c in enumerate(languages)}
    prompt_len = {c: len(model.prompt_ids(c)) for c in languages}
    max_frames = model.max_input_frames() if hasattr(model, "max_input_frames") else None
    corpus = Corpus([])
    for utt, transcript in text.items():
        lang = utt2lang[utt]
        if lang not in lang_index:
            raise DataDirError(f"{dd.path / 'utt2lang'}: utterance '{utt}' has language '{lang}', "
                               f"which is not in this run's languages ({', '.join(languages)})")
        seconds = utt2dur[utt] if utt2dur is not None and utt in utt2dur else frames[utt] / frames_per_second
        ids = model.tokenizer.encode(transcript)
        n_tok = model.speech_token_count(frames[utt]) + prompt_len[lang] + len(ids) + 1
        reason = _skip_reason(seconds, max_duration, ids, n_tok, max_tokens, transcript,
                              frames[utt], max_frames, frames_per_second)
        if reason:
            corpus.skipped[reason] += 1
            corpus.skipped_examples.setdefault(reason, utt)
            continue
        corpus.utterances.append(Utterance(utt, lang_index[lang], frames[utt], seconds, ids, n_tok))
    if not corpus.utterances:
        raise UserError(f"{dd.path}: no usable utterance ({corpus.describe_skips()})")
    return corpus


FRAME_CHECKS = 8     # utterances whose utt2num_frames entry is compared with the matrix up front


def check_num_frames(feats, frames: dict[str, int], utts: list[str], feats_scp: Path) -> None:
    """utt2num_frames against the real matrices of up to FRAME_CHECKS utterances spread over the
    set (first and last included): a stale file (an older dump) fails before training starts.
    Every other utterance is checked when its matrix is loaded (PackDataset)."""
    if not utts or not (feats_scp.parent / "utt2num_frames").is_file():
        return
    k = min(FRAME_CHECKS, len(utts))
    picks = sorted({round(i * (len(utts) - 1) / max(1, k - 1)) for i in range(k)})
    for utt in (utts[i] for i in picks):
        check_frame_count(utt, frames[utt], int(feats[utt].shape[0]), feats_scp)


def check_frame_count(utt: str, listed: int, real: int, feats_scp: Path | str) -> None:
    if listed != real:
        raise DataDirError(f"{Path(feats_scp).parent / 'utt2num_frames'}: utterance '{utt}' has {listed} frames "
                           f"there, but its matrix in {feats_scp} has {real}: the file is stale (re-run the "
                           "dump, or delete it to have the frames counted from the matrices)")


def _ids(ids: list[str]) -> str:
    return ", ".join(f"'{u}'" for u in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def check_ids(dd: DataDir, text: dict, utt2lang: dict, feats, frames: dict, feats_scp: Path) -> None:
    """Every utterance of ``text`` needs a language and features; text and utt2lang must hold the
    same ids. Errors name the file, the number of ids and the first few of them."""
    only_text = [u for u in text if u not in utt2lang]
    if only_text:
        raise DataDirError(f"{dd.path / 'utt2lang'}: no entry for utterance {_ids(only_text)} "
                           f"({len(only_text)} of {len(text)} in {dd.path / 'text'}); run "
                           "utils/fix_data_dir.sh")
    only_lang = [u for u in utt2lang if u not in text]
    if only_lang:
        raise DataDirError(f"{dd.path / 'text'}: no transcript for utterance {_ids(only_lang)} "
                           f"({len(only_lang)} of {len(utt2lang)} in {dd.path / 'utt2lang'}); run "
                           "utils/fix_data_dir.sh")
    no_feats = [u for u in text if u not in feats]
    if no_feats:
        raise DataDirError(f"{feats_scp}: no features for utterance {_ids(no_feats)} ({len(no_feats)} "
                           f"of {len(text)} in {dd.path / 'text'}); re-run dump_feats on this data dir")
    no_frames = [u for u in text if u not in frames]
    if no_frames:
        raise DataDirError(f"{feats_scp.parent / 'utt2num_frames'}: no entry for utterance "
                           f"{_ids(no_frames)} ({len(no_frames)} of {len(text)})")
    extra = len(feats) - len(text)
    if extra > 0:
        log.info("%s: %d feature entries belong to no utterance of %s (ignored)", feats_scp, extra,
                 dd.path / "text")


def _skip_reason(seconds: float, max_duration: float | None, ids: list[int], n_tok: int,
                 max_tokens: int, transcript: str | None = None, n_frames: int = 0,
                 max_frames: int | None = None, frames_per_second: float = 100.0) -> str | None:
    if max_duration is not None and seconds > max_duration:
        return f"longer than data.max_duration={max_duration:g} s"
    if max_frames is not None and n_frames > max_frames:
        # The full-context encoder would fail on it mid-run (Whisper's 30-s positional table).
        return (f"longer than the encoder accepts ({max_frames} frames = "
                f"{max_frames / frames_per_second:g} s; use chunked encoding)")
    if not ids:
        return "empty transcript"
    if transcript is not None and not any(ch.isalnum() for ch in transcript):
        # Only punctuation/symbols: no speech content to learn, and Whisper normalisation leaves
        # nothing to score (zlora.scoring excludes such references too).
        return "transcript has no letter or digit (punctuation only)"
    if n_tok > max_tokens:
        return f"longer than data.max_tokens={max_tokens} on its own"
    return None


def pack_corpus(utts: Sequence[Utterance], max_tokens: int) -> tuple[list[list[int]], dict[int, list[int]]]:
    """Language-homogeneous packs: (packs as utterance indices, {lang: pack ids})."""
    packs: list[list[int]] = []
    by_lang: dict[int, list[int]] = {}
    for lang in sorted({u.lang for u in utts}):
        members = [i for i, u in enumerate(utts) if u.lang == lang]
        for group in pack_lengths([utts[i].n_tokens for i in members], max_tokens):
            by_lang.setdefault(lang, []).append(len(packs))
            packs.append([members[j] for j in group])
    return packs, by_lang


def sequential_packs(utts: Sequence[Utterance], max_tokens: int) -> list[list[int]]:
    """Validation packs: utterances in corpus order, a new pack at each language change or when
    the next utterance would not fit (deterministic, no sorting)."""
    packs: list[list[int]] = []
    total = max_tokens + 1
    for i, u in enumerate(utts):
        if packs and utts[packs[-1][0]].lang == u.lang and total + u.n_tokens <= max_tokens:
            packs[-1].append(i)
            total += u.n_tokens
        else:
            packs.append([i])
            total = u.n_tokens
    return packs


class PackDataset(torch.utils.data.Dataset):
    """Index -> one pack: a list of {utt, feats (T, D) float32, lang, text_ids, seconds, n_tokens}.

    Indices are (pack_id, epoch, batch_index) tuples from the samplers; with ``chunk_seconds`` (the
    encoder's training chunk durations, §IV-F) each utterance also gets a chunk duration drawn
    from a generator seeded by (seed, epoch, batch, pack), so a resumed run draws the same ones.
    """

    def __init__(self, utts: Sequence[Utterance], packs: Sequence[Sequence[int]], feats_scp: str | Path,
                 check_finite: bool = True, chunk_seconds: Sequence[float] | None = None, seed: int = 0):
        self.utts, self.packs = list(utts), [list(p) for p in packs]
        self.feats_scp = str(feats_scp)
        self.check_finite = check_finite
        self.chunk_seconds = list(chunk_seconds) if chunk_seconds else None
        self.seed = seed
        self._feats = None

    def __len__(self) -> int:
        return len(self.packs)

    def pack_tokens(self, pack_id: int) -> int:
        return sum(self.utts[i].n_tokens for i in self.packs[pack_id])

    def _matrix(self, utt: str) -> np.ndarray:
        import kaldiio

        if self._feats is None:     # opened lazily: once per DataLoader worker
            self._feats = kaldiio.load_scp(self.feats_scp)
        try:
            mat = np.array(self._feats[utt], dtype=np.float32)   # a writable copy (arks may be mmapped)
        except Exception as e:  # kaldiio raises assorted errors on truncated/corrupt arks
            raise UserError(f"{self.feats_scp}: cannot read features of utterance '{utt}': {e}") from e
        if mat.ndim != 2:
            raise UserError(f"{self.feats_scp}: utterance '{utt}': expected a (T, D) matrix, got {mat.shape}")
        if self.check_finite and not np.isfinite(mat).all():
            raise UserError(f"{self.feats_scp}: utterance '{utt}': features contain NaN or Inf")
        return mat

    def __getitem__(self, key) -> list[dict]:
        pack_id, epoch, batch = key if isinstance(key, tuple) else (key, 0, 0)
        rng = np.random.default_rng([self.seed, epoch, batch, pack_id]) if self.chunk_seconds else None
        items = []
        for i in self.packs[pack_id]:
            u = self.utts[i]
            mat = self._matrix(u.utt)
            check_frame_count(u.utt, u.n_frames, mat.shape[0], self.feats_scp)   # packing trusted it
            item = {"utt": u.utt, "feats": mat, "lang": u.lang, "text_ids": u.text_ids,
                    "seconds": u.seconds, "n_tokens": u.n_tokens, "epoch": epoch, "batch": batch}
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

    Batch: feats (N_utt, T_max, D) zero-padded, feat_lens (N_utt,), lang_ids (N_utt,),
    text_ids list[list[int]], pack_ids (N_utt,) (utterances of one pack form one LLM row, in order),
    and chunk_seconds (N_utt,) when the dataset draws them.
    """
    items = [(p, it) for p, pack in enumerate(packs) for it in pack]
    t_max = max(it["feats"].shape[0] for _, it in items)
    dim = items[0][1]["feats"].shape[1]
    feats = torch.zeros(len(items), t_max, dim, dtype=torch.float32)
    for k, (_, it) in enumerate(items):
        feats[k, :it["feats"].shape[0]] = torch.from_numpy(it["feats"])
    batch = {
        "feats": feats,
        "feat_lens": torch.tensor([it["feats"].shape[0] for _, it in items], dtype=torch.long),
        "lang_ids": torch.tensor([it["lang"] for _, it in items], dtype=torch.long),
        "text_ids": [list(it["text_ids"]) for _, it in items],
        "pack_ids": torch.tensor([p for p, _ in items], dtype=torch.long),
    }
    if "chunk_seconds" in items[0][1]:
        batch["chunk_seconds"] = torch.tensor([it["chunk_seconds"] for _, it in items], dtype=torch.float32)
    pack_tok = [sum(it["n_tokens"] for it in pack) for pack in packs]
    meta = BatchMeta(utts=[it["utt"] for _, it in items], real_tokens=sum(pack_tok),
                     padded_tokens=len(pack_tok) * max(pack_tok),
                     audio_seconds=float(sum(it["seconds"] for _, it in items)),
                     epoch=items[0][1]["epoch"], batch=items[0][1]["batch"], n_packs=len(packs))
    return batch, meta


def describe_lengths(utts: Sequence[Utterance], languages: Sequence[str]) -> str:
    """One line per language: utterances, hours, tokens (for the log)."""
    lines = []
    for k, lang in enumerate(languages):
        sel = [u for u in utts if u.lang == k]
        if sel:
            hours = sum(u.seconds for u in sel) / 3600
            lines.append(f"{lang}: {len(sel)} utts, {hours:.2f} h, {sum(u.n_tokens for u in sel)} tokens")
    return "; ".join(lines)

