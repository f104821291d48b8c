"""Training/validation data for a run: corpus -> packs -> sampler -> DataLoader, with the log lines
a user needs (skipped utterances, per-language amounts, packing efficiency)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from zlora.data.dataset import (Corpus, PackDataset, collate_packs, describe_lengths, load_utterances,
                                pack_corpus, sequential_packs)
from zlora.data.packing import batch_padding_efficiency, pack_efficiency
from zlora.data.sampler import PackBatchSampler, ShardedSequentialSampler
from zlora.train.config import TrainConfig
from zlora.train.distributed import DistInfo
from zlora.utils.log import get_logger

log = get_logger("train.data")


@dataclass
class TrainData:
    dataset: PackDataset
    sampler: PackBatchSampler
    corpus: Corpus
    num_workers: int
    seed: int

    def loader(self) -> torch.utils.data.DataLoader:
        """A loader from the sampler's current position. Its own generator keeps DataLoader from
        drawing from the global torch RNG (which would make a resumed run's dropout differ)."""
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=self.num_workers,
            collate_fn=collate_packs, generator=torch.Generator().manual_seed(self.seed))


def _load(cfg: TrainConfig, model, data_dir: str, feats: str, max_duration: float | None) -> Corpus:
    from zlora.data.feature_source import ModelInput, check_features_fit

    check_features_fit(feats, ModelInput.of_model(model))    # log-mel or a cache of the model's own layers
    # Feature rows per second from the model: 100 for log-mel, 50 for cached encoder states.
    return load_utterances(data_dir, feats, model, list(cfg.languages), cfg.data.max_tokens,
                           max_duration, 1.0 / model.seconds_per_frame)


def chunk_choices(cfg: TrainConfig) -> list[float] | None:
    """§IV-F: chunk durations sampled per utterance in training when the encoder is chunked."""
    enc = cfg.model.encoder
    return list(enc.train_chunk_seconds) if enc.chunked else None


def build_train_data(cfg: TrainConfig, model, dist: DistInfo) -> TrainData:
    d = cfg.data
    corpus = _load(cfg, model, d.train, d.train_feats, d.max_duration)
    log.info("train data %s: %d utterances used; %s", d.train, len(corpus.utterances), corpus.describe_skips())
    log.info("train data per language: %s", describe_lengths(corpus.utterances, cfg.languages))
    packs, by_lang = pack_corpus(corpus.utterances, d.max_tokens)
    dataset = PackDataset(corpus.utterances, packs, d.train_feats, d.check_finite, chunk_choices(cfg), cfg.seed)
    sampler = PackBatchSampler(by_lang, d.batch_size, dist.world_size, dist.rank, cfg.seed, d.sampling,
                               d.temperature, steps_multiple=cfg.optim.grad_accum)
    pack_tok = [dataset.pack_tokens(i) for i in range(len(dataset))]
    probs = ", ".join(f"{cfg.languages[k]} {p:.3f}" for k, p in sampler.language_probs().items())
    log.info("packing: %d utterances -> %d language-homogeneous packs of <= %d tokens; pack fill "
             "(real / packs x max_tokens) %.3f; batch padding efficiency (real / padded tokens, "
             "epoch 0) %.3f", len(corpus.utterances), len(packs), d.max_tokens,
             pack_efficiency(pack_tok, d.max_tokens),
             batch_padding_efficiency(sampler.epoch_batches(0), pack_tok))
    log.info("sampling %s: language probabilities %s; %d micro-batches of %d packs per rank per epoch",
             d.sampling, probs, sampler.batches_per_epoch(), d.batch_size)
    return TrainData(dataset, sampler, corpus, d.num_workers, cfg.seed)


def build_valid_loader(cfg: TrainConfig, model, dist: DistInfo) -> torch.utils.data.DataLoader | None:
    """Validation keeps every utterance the model can take (no duration limit, sequential packs)."""
    d = cfg.data
    if d.valid is None:
        return None
    corpus = _load(cfg, model, d.valid, d.valid_feats, None)
    log.info("valid data %s: %d utterances; %s", d.valid, len(corpus.utterances), corpus.describe_skips())
    packs = sequential_packs(corpus.utterances, d.max_tokens)
    dataset = PackDataset(corpus.utterances, packs, d.valid_feats, d.check_finite)
    sampler = ShardedSequentialSampler(len(packs), d.batch_size, dist.world_size, dist.rank)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0, collate_fn=collate_packs)
