"""Training/validation data for a run: corpus -> packs -> sampler -> DataLoader, with the log lines
a user needs (skipped utterances, per-language amounts, packing efficiency)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from zlora.data.dataset import (Corpus, PackDataset, collate_packs, describe_lengths, load_utterances,
                                pack_blocks, pack_corpus, sequential_packs)
from zlora.data.packing import batch_padding_efficiency, pack_efficiency
from zlora.data.sampler import PackBatchSampler, ShardedSequentialSampler
from zlora.data.tokens import cache_dir_for
from zlora.train.config import TrainConfig
from zlora.train.distributed import DistInfo, barrier
from zlora.utils.log import get_logger

log = get_logger("train.data")


@dataclass
class TrainData:
    dataset: PackDataset
    sampler: PackBatchSampler
    corpus: Corpus
    num_workers: int
    seed: int
    pin_memory: bool = False
    _loader: torch.utils.data.DataLoader | None = field(default=None, repr=False)

    def loader(self) -> torch.utils.data.DataLoader:
        """The run's one DataLoader; every ``iter()`` continues from the sampler's position.
        Workers are persistent (forked once, not per epoch: each fork would re-copy the training
        process's pages) and batches pinned on CUDA. Its own generator keeps DataLoader from
        drawing from the global torch RNG (which would make a resumed run's dropout differ)."""
        if self._loader is None:
            workers = self.num_workers
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=self.sampler, num_workers=workers,
                collate_fn=collate_packs, generator=torch.Generator().manual_seed(self.seed),
                pin_memory=self.pin_memory, persistent_workers=workers > 0)
        return self._loader


def _load(cfg: TrainConfig, model, data_dir: str, feats: str | None, max_duration: float | None,
          dist: DistInfo) -> Corpus:
    from zlora.data.feature_source import ModelInput, check_features_fit

    d = cfg.data
    if d.feats_type == "dumped":         # log-mel or a cache of the model's own layers
        check_features_fit(feats, ModelInput.of_model(model))
    # Feature rows per second from the model: 100 for log-mel, 50 for cached encoder states.
    return load_utterances(data_dir, feats, model, list(cfg.languages), d.max_tokens, max_duration,
                           1.0 / model.seconds_per_frame, feats_type=d.feats_type,
                           token_cache=cache_dir_for(data_dir) if d.token_cache else None,
                           is_main=dist.is_main, barrier=barrier, check_finite=d.check_finite)


def chunk_choices(cfg: TrainConfig) -> list[float] | None:
    """§IV-F: chunk durations sampled per utterance in training when the encoder is chunked."""
    enc = cfg.model.encoder
    return list(enc.train_chunk_seconds) if enc.chunked else None


def in_shards(corpus: Corpus) -> bool:
    """Every utterance is an entry in an ark (dump_audio shards): reads can follow the files."""
    return corpus.index is not None and corpus.index.kind == "audio" and bool((corpus.index.file_id >= 0).all())


def build_train_data(cfg: TrainConfig, model, dist: DistInfo) -> TrainData:
    d = cfg.data
    corpus = _load(cfg, model, d.train, d.train_feats, d.max_duration, dist)
    log.info("train data %s (%s): %d utterances used; %s", d.train, d.feats_type, len(corpus),
             corpus.describe_skips())
    log.info("train data per language: %s", describe_lengths(corpus, cfg.languages))
    blocks = None
    if in_shards(corpus) and d.shard_block_utts > 0:
        packs, by_lang, blocks = pack_blocks(corpus, d.max_tokens, d.shard_block_utts)
        log.info("sequential reading: %d shards, packs built within blocks of <= %d consecutive "
                 "utterances, an epoch reads a block's packs together", len(corpus.index.handles.paths),
                 d.shard_block_utts)
    else:
        packs, by_lang = pack_corpus(corpus, d.max_tokens)
    dataset = PackDataset(corpus, packs, None, d.check_finite, chunk_choices(cfg), cfg.seed)
    sampler = PackBatchSampler(by_lang, d.batch_size, dist.world_size, dist.rank, cfg.seed, d.sampling,
                               d.temperature, steps_multiple=cfg.optim.grad_accum, blocks=blocks)
    pack_tok = dataset.all_pack_tokens()
    probs = ", ".join(f"{cfg.languages[k]} {p:.3f}" for k, p in sampler.language_probs().items())
    log.info("packing: %d utterances -> %d language-homogeneous packs of <= %d tokens; pack fill "
             "(real / packs x max_tokens) %.3f; batch padding efficiency (real / padded tokens, "
             "epoch 0) %.3f", len(corpus), len(packs), d.max_tokens,
             pack_efficiency(pack_tok.tolist(), d.max_tokens),
             batch_padding_efficiency(sampler.epoch_batches(0), pack_tok))
    log.info("sampling %s: language probabilities %s; %d micro-batches of %d packs per rank per epoch",
             d.sampling, probs, sampler.batches_per_epoch(), d.batch_size)
    return TrainData(dataset, sampler, corpus, d.num_workers, cfg.seed, pin_memory=dist.device.type == "cuda")


def build_pack_dataset(cfg: TrainConfig, model, data_dir: str, feats: str | None, dist: DistInfo) -> PackDataset:
    """Every utterance of ``data_dir`` in sequential packs, encoded as in training (for passes
    outside the ASR loss, e.g. MoLE's LID phase)."""
    corpus = _load(cfg, model, data_dir, feats, None, dist)
    log.info("data %s: %d utterances; %s", data_dir, len(corpus), corpus.describe_skips())
    return PackDataset(corpus, sequential_packs(corpus, cfg.data.max_tokens), None, cfg.data.check_finite,
                       chunk_choices(cfg), cfg.seed)


def build_valid_loader(cfg: TrainConfig, model, dist: DistInfo) -> torch.utils.data.DataLoader | None:
    """Validation keeps every utterance the model can take (no duration limit, sequential packs)."""
    d = cfg.data
    if d.valid is None:
        return None
    corpus = _load(cfg, model, d.valid, d.valid_feats, None, dist)
    log.info("valid data %s: %d utterances; %s", d.valid, len(corpus), corpus.describe_skips())
    packs = sequential_packs(corpus, d.max_tokens)
    dataset = PackDataset(corpus, packs, None, d.check_finite)
    sampler = ShardedSequentialSampler(len(packs), d.batch_size, dist.world_size, dist.rank)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0, collate_fn=collate_packs)
