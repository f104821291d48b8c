"""Where each utterance's language comes from when decoding (``--lang.mode``), one small class
per source behind one interface, in a registry (adding a source touches its class and a test).

- ``known``: utt2lang (the paper's setting, §V-B).
- ``oracle``: utt2lang through the language-agnostic path (a one-hot posterior for Zipper
  routers, the predicted-language path otherwise); must equal ``known`` (tested).
- ``whisper_lid``: Whisper's language detection (zlora.models.lid) on each utterance's log-mel
  (``--lang.feats``), restricted to the model's languages and renormalised, or an earlier run's
  ``lid_posteriors.jsonl`` (``--lang.posteriors``). The prompt uses the argmax language. Zipper
  routers get the argmax language's LID embedding (``--lang.router_input hard``) or the
  posterior-weighted mixture of LID embeddings with B_spec mixed by the same posterior
  (``mixture``; beyond both papers). Other kinds use the argmax language.
- ``probe``: a linear LID probe on pooled encoder states (zlora.bin.train_lid_probe), reading the
  decoded encoder cache itself by default; prompts and routers as for ``whisper_lid``.
- ``mole``: LoRA-MoLE's own LID classifier (zlora.adapters.mole) picks the expert and the prompt.
  The encoder runs twice (once to classify, once inside generate: same decision, deterministic).

A source turns a batch into a :class:`Route`: the (B,) language used for each prompt, an optional
(B, L) posterior for Zipper routers, and MoLE's routing mode. Sources that are not ``known``
also record what they decided (``lid`` files per part: zlora.decode.agnostic).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from zlora.registry import Registry
from zlora.utils.cli import UserError

LANG_SOURCES: Registry = Registry("language source (--lang.mode)")


@dataclass
class LanguageConfig:
    """``lang:`` section of the decode config (``--lang.<key>``)."""
    mode: str = "known"                   # known | oracle | whisper_lid | probe | mole
    feats: Optional[str] = None           # whisper_lid: a log-mel feats.scp; null: the decode's own
                                          #   log-mel input (not for a model that reads cached states)
    whisper_dir: Optional[str] = None     # whisper_lid: Whisper dir; default model.encoder.whisper_dir
    router_input: Literal["hard", "mixture"] = "hard"   # Zipper routers under whisper_lid
    posteriors: Optional[str] = None      # whisper_lid: lid_posteriors.jsonl of an earlier decode of the
    #                                       same data, instead of running Whisper again
    probe: Optional[str] = None           # probe: a LID probe (zlora.bin.train_lid_probe); it reads
    #                                       --lang.feats, default the decoded features themselves

    def __post_init__(self):
        if self.mode not in LANG_SOURCES:
            raise UserError(f"--lang.mode {self.mode!r}: expected one of {', '.join(LANG_SOURCES.names())}")
        LANG_SOURCES.get(self.mode).check(self)


@dataclass
class Route:
    """How one batch is decoded: langs (B,) for the prompts; posterior (B, L) for Zipper routers
    or None; mole_mode for MoLE layers ("true": the langs pick the expert; "predicted")."""
    langs: torch.Tensor
    posterior: Optional[torch.Tensor] = None
    mole_mode: str = "true"

    @contextlib.contextmanager
    def applied(self, model):
        from zlora.adapters.mole import mole_state
        from zlora.adapters.posterior import language_posterior_context

        state = mole_state(model.encoder)
        if state is not None:
            state.mode = self.mole_mode
        if self.posterior is None:
            yield
            return
        with language_posterior_context(model.encoder, self.posterior.to(self.langs.device)):
            yield


class LanguageSource:
    """One per decoding part. ``route`` decides a batch; ``seen`` keeps the posteriors to write."""
    writes_lid = True                     # record the decided language per utterance (lid.json)

    def __init__(self, cfg: LanguageConfig, model):
        self.cfg, self.languages = cfg, list(model.languages)
        self.seen: dict[str, dict[str, float]] = {}

    @staticmethod
    def check(cfg: LanguageConfig) -> None:
        """Config checks before anything is loaded (UserError naming the option)."""

    def route(self, model, feats: torch.Tensor, lens: torch.Tensor, utts: list[str],
              true_langs: torch.Tensor) -> Route:
        raise NotImplementedError


@LANG_SOURCES.register("known")
class KnownLanguage(LanguageSource):
    writes_lid = False

    def route(self, model, feats, lens, utts, true_langs):
        return Route(true_langs)


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(index.long().cpu(), n).float()


@LANG_SOURCES.register("oracle")
class OracleLanguage(LanguageSource):
    def route(self, model, feats, lens, utts, true_langs):
        return Route(true_langs, one_hot(true_langs, len(self.languages)))


@LANG_SOURCES.register("mole")
class MoLELanguage(LanguageSource):
    def route(self, model, feats, lens, utts, true_langs):
        # "predicted": generate routes by the classifier again (the same decision: deterministic)
        return Route(mole_predict(model, feats, lens).to(lens.device), mole_mode="predicted")


def mole_predict(model, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
    """(B,) language indices from the MoLE classifier (runs the encoder in predicted mode)."""
    from zlora.adapters.mole import mole_state

    state = mole_state(model.encoder)
    if state is None:
        raise UserError("--lang.mode mole needs a model trained with adapter.kind: mole")
    state.mode = "predicted"
    state.reset()
    with torch.inference_mode():
        model.encoder(feats, feat_lens, torch.zeros_like(feat_lens))
    return state.row_prediction().clone()


class PosteriorSource(LanguageSource):
    """A source that yields a (B, L) posterior over the model's languages; the prompt takes the
    argmax, Zipper routers the argmax (``router_input: hard``) or the posterior (``mixture``)."""

    def posteriors(self, feats, lens, utts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def route(self, model, feats, lens, utts, true_langs):
        post = self.posteriors(feats, lens, utts)
        for u, row in zip(utts, post.tolist()):
            self.seen[u] = dict(zip(self.languages, row))
        langs = post.argmax(-1).to(lens.device)
        if self.cfg.router_input == "hard":
            post = one_hot(langs, len(self.languages))
        return Route(langs, post)


@LANG_SOURCES.register("probe")
class ProbeLanguage(PosteriorSource):
    """A linear LID probe on pooled encoder states (zlora.bin.train_lid_probe). By default it reads
    the decoded features themselves (an encoder cache the model decodes from: no extra encoder
    pass); ``--lang.feats`` names another feats.scp of the kind the probe was trained on."""

    def __init__(self, cfg: LanguageConfig, model):
        import kaldiio

        from zlora.bin.train_lid_probe import load_probe

        super().__init__(cfg, model)
        self.probe, probe_langs, meta = load_probe(cfg.probe)
        missing = [c for c in self.languages if c not in probe_langs]
        if missing:
            raise UserError(f"--lang.probe {cfg.probe}: no class for the model's language(s) {', '.join(missing)}")
        self.cols = torch.tensor([probe_langs.index(c) for c in self.languages])
        self.dim = int(meta["dim"])
        self.mats = kaldiio.load_scp(cfg.feats) if cfg.feats else None

    @staticmethod
    def check(cfg: LanguageConfig) -> None:
        if not cfg.probe:
            raise UserError("--lang.mode probe needs --lang.probe (python -m zlora.bin.train_lid_probe writes one)")

    def posteriors(self, feats, lens, utts):
        from zlora.decode.batches import pad, read_feats
        from zlora.models.lid_probe import mean_pool

        if self.mats is not None:
            feats, lens = pad([read_feats(self.mats, u, self.cfg.feats) for u in utts])
        if feats.shape[-1] != self.dim:
            raise UserError(f"--lang.probe {self.cfg.probe} reads {self.dim}-dim states but the features are "
                            f"{feats.shape[-1]}-dim; give --lang.feats of the kind it was trained on")
        with torch.no_grad():
            logits = self.probe(mean_pool(feats.float().cpu(), lens.cpu()))
        post = logits.softmax(-1)[:, self.cols]                       # the model's languages only
        return post / post.sum(-1, keepdim=True).clamp_min(1e-12)


@LANG_SOURCES.register("whisper_lid")
class WhisperLanguage(PosteriorSource):
    """Whisper LID posteriors over the model's languages, from Whisper or ``--lang.posteriors``."""

    def __init__(self, cfg: LanguageConfig, model):
        import kaldiio

        from zlora.decode.agnostic import read_posteriors

        super().__init__(cfg, model)
        self.whisper = cfg.whisper_dir or model.cfg.encoder.whisper_dir
        self.cached = read_posteriors(cfg.posteriors) if cfg.posteriors else None
        # no --lang.feats: Whisper reads the decode's own input, which is log-mel unless the model
        # starts from cached encoder states (raw audio: the on-device log-mel, zlora.data.frontend)
        self.mels = kaldiio.load_scp(cfg.feats) if self.cached is None and cfg.feats else None
        if self.cached is None and self.mels is None and model.cfg.encoder.cached_layers > 0:
            raise UserError(f"--lang.mode whisper_lid: the model reads cached encoder states "
                            f"(model.encoder.cached_layers={model.cfg.encoder.cached_layers}), not log-mel: "
                            "give --lang.feats (the log-mel feats.scp of --data) or --lang.posteriors")
        if self.cached is None and not self.whisper:
            raise UserError("--lang.mode whisper_lid: no Whisper dir (give --lang.whisper_dir)")

    def posteriors(self, feats, lens, utts):
        return self._cached(utts) if self.cached is not None else self._whisper(feats, lens, utts)

    def _whisper(self, feats: torch.Tensor, lens: torch.Tensor, utts: list[str]) -> torch.Tensor:
        """feats (B, T, n_mels), lens (B,): the decode's log-mel input, used without --lang.feats."""
        from zlora.decode.agnostic import whisper_posteriors
        from zlora.decode.batches import read_feats

        if self.mels is not None:
            mels = [read_feats(self.mels, u, self.cfg.feats) for u in utts]
        else:
            mels = [feats[i, : int(n)].float().cpu() for i, n in enumerate(lens)]
        return whisper_posteriors(self.whisper, mels, self.languages)

    def _cached(self, utts: list[str]) -> torch.Tensor:
        where = f"--lang.posteriors {self.cfg.posteriors}"
        missing = [u for u in utts if u not in self.cached]
        if missing:
            raise UserError(f"{where}: no posterior for {missing[0]}")
        rows = [[self.cached[u].get(lang, 0.0) for lang in self.languages] for u in utts]
        empty = [u for u, row in zip(utts, rows) if sum(row) <= 0]
        if empty:
            raise UserError(f"{where}: the posterior of {empty[0]} has no mass on the model's languages "
                            f"({', '.join(self.languages)})")
        post = torch.tensor(rows, dtype=torch.float32)
        return post / post.sum(-1, keepdim=True).clamp_min(1e-12)
