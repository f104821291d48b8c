"""Batches of language-homogeneous packs: language sampling, rank sharding, exact resume.

Each epoch the sampler lays out one global sequence of packs, cuts it into global batches of
``batch_size x world_size`` packs and gives rank r the r-th slice of every global batch, so the
ranks' shards are disjoint and every rank runs the same number of micro-steps (a rank running
out early would leave its peers blocked in a collective). The tail that does not fill a whole
global batch -- and whole steps, with gradient accumulation -- is dropped for that epoch; a new
shuffle each epoch drops different packs.

Language policy (how languages interleave across steps):
- ``proportional`` (default): every pack exactly once per epoch, in a uniformly random order, so
  each language appears in proportion to its data.
- ``temperature``: each slot draws a language with p_l ∝ n_l^(1/T), n_l = the language's number of
  packs (its data in tokens, up to packing slack), then that language's next pack (its own
  shuffled list, reshuffled when used up). T = 1 is proportional in expectation; T > 1 up-samples
  the long tail (a tail pack may recur within an epoch; the ranks still get disjoint slots).

Sequential reading (``blocks``: audio shards, zlora.data.dataset.pack_blocks): a language's packs
come in blocks (the packs of a few hundred consecutive utterances of one shard). The language
order of the slots is drawn as above, but each language's stream is its blocks in a random order
(reshuffled per epoch, and per cycle under temperature sampling), a block's packs consecutive
and in storage order, so the readers go forward through one region of a shard at a time.

Everything is a function of (seed, epoch): no global RNG is touched, so a resumed run sees the
same batches. ``state_dict()`` holds the epoch and how many micro-batches of it were consumed.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from zlora.utils.cli import UserError


class PackBatchSampler:
    """Yields, per micro-step, a list of (pack_id, epoch, batch_index) for this rank.

    packs_by_lang: {language index: [pack ids]} (pack ids index the dataset).
    steps_multiple: the per-epoch batch count is truncated to a multiple of this (grad_accum), so
      an optimizer step never straddles two epochs.
    blocks: {language index: [[pack ids of a block, in read order], ...]} for sequential
      reading (see the module doc); None = packs in a uniformly random order.
    """

    def __init__(self, packs_by_lang: dict[int, Sequence[int]], batch_size: int, world_size: int = 1,
                 rank: int = 0, seed: int = 0, sampling: str = "proportional", temperature: float = 1.0,
                 steps_multiple: int = 1, blocks: dict[int, Sequence[Sequence[int]]] | None = None):
        if sampling not in ("proportional", "temperature"):
            raise ValueError(f"unknown sampling policy {sampling!r}")
        self.langs = sorted(lang for lang, packs in packs_by_lang.items() if len(packs))
        self.packs = {lang: np.asarray(packs_by_lang[lang], dtype=np.int64) for lang in self.langs}
        self.n_packs = sum(len(p) for p in self.packs.values())
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.seed, self.sampling, self.temperature = seed, sampling, temperature
        self.steps_multiple = steps_multiple
        self.blocks = None if blocks is None else {
            lang: [np.asarray(b, dtype=np.int64) for b in blocks[lang] if len(b)] for lang in self.langs}
        self.epoch = 0
        self.consumed = 0
        if self.batches_per_epoch() == 0:
            raise UserError(
                f"the training data gives 0 steps per epoch: {self.n_packs} pack(s) cannot fill "
                f"{steps_multiple} micro-step(s) of batch_size={batch_size} packs on {world_size} "
                "rank(s); add data or lower data.batch_size / optim.grad_accum")

    # ---- layout ---------------------------------------------------------------------------
    def language_probs(self) -> dict[int, float]:
        """p_l of the policy: n_l / N (proportional) or n_l^(1/T) normalised (temperature)."""
        n = np.array([len(self.packs[lang]) for lang in self.langs], dtype=np.float64)
        w = n if self.sampling == "proportional" else n ** (1.0 / self.temperature)
        return dict(zip(self.langs, (w / w.sum()).tolist()))

    def global_sequence(self, epoch: int) -> np.ndarray:
        """(n_packs,) pack ids in this epoch's order (identical on every rank)."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.blocks is not None:
            return self._block_sequence(rng)
        if self.sampling == "proportional":
            return rng.permutation(np.concatenate([self.packs[lang] for lang in self.langs]))
        probs = self.language_probs()
        labels = rng.choice(len(self.langs), size=self.n_packs, p=[probs[lang] for lang in self.langs])
        out = np.empty(self.n_packs, dtype=np.int64)
        for k, lang in enumerate(self.langs):
            slots = np.flatnonzero(labels == k)
            pool = self.packs[lang]
            reps = -(-len(slots) // len(pool)) if len(slots) else 0
            stream = np.concatenate([rng.permutation(pool) for _ in range(reps)]) if reps else pool[:0]
            out[slots] = stream[:len(slots)]
        return out

    def _block_sequence(self, rng: np.random.Generator) -> np.ndarray:
        """Language labels per slot as in global_sequence; each language's stream = its blocks in
        random order, packs within a block consecutive."""
        sizes = [len(self.packs[lang]) for lang in self.langs]
        if self.sampling == "proportional":
            labels = rng.permutation(np.repeat(np.arange(len(self.langs)), sizes))
        else:
            probs = self.language_probs()
            labels = rng.choice(len(self.langs), size=self.n_packs, p=[probs[lang] for lang in self.langs])
        out = np.empty(self.n_packs, dtype=np.int64)
        for k, lang in enumerate(self.langs):
            slots = np.flatnonzero(labels == k)
            stream, have = [], 0
            while have < len(slots):            # one cycle (temperature: several) over the blocks
                for b in rng.permutation(len(self.blocks[lang])):
                    stream.append(self.blocks[lang][b])
                    have += len(self.blocks[lang][b])
            out[slots] = np.concatenate(stream)[:len(slots)] if stream else self.packs[lang][:0]
        return out

    def batches_per_epoch(self) -> int:
        per_rank = self.n_packs // (self.batch_size * self.world_size)
        return per_rank - per_rank % self.steps_multiple

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches (lists of pack ids) for ``epoch``."""
        seq = self.global_sequence(epoch)
        span = self.batch_size * self.world_size
        out = []
        for b in range(self.batches_per_epoch()):
            start = b * span + self.rank * self.batch_size
            out.append(seq[start:start + self.batch_size].tolist())
        return out

    # ---- iteration and state -----------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch, self.consumed = epoch, 0

    def advance(self, n: int = 1) -> None:
        """The training loop consumed ``n`` more micro-batches (DataLoader prefetch does not count)."""
        self.consumed += n

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for b, packs in enumerate(self.epoch_batches(self.epoch)):
            if b >= self.consumed:
                yield [(p, self.epoch, b) for p in packs]

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.consumed

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "world_size": self.world_size, "n_packs": self.n_packs,
                "batch_size": self.batch_size, "sampling": self.sampling, "blocks": self.blocks is not None}

    def load_state_dict(self, state: dict) -> None:
        """Restore the position; refuses a state whose layout would differ (exact resume)."""
        now = self.state_dict()
        for key in ("seed", "world_size", "n_packs", "batch_size", "sampling", "blocks"):
            if state.get(key, False if key == "blocks" else None) != now[key]:
                raise UserError(f"cannot resume the data order: the checkpoint has {key}="
                                f"{state.get(key)!r}, this run has {now[key]!r}; resume "
                                "with the same data, batch size, seed and number of ranks")
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])


class ShardedSequentialSampler:
    """Validation: packs in a fixed order, ``batch_size`` per batch, batches dealt round-robin to
    ranks (nothing dropped; ranks may get one batch more or less -- forward only, no collectives)."""

    def __init__(self, n_packs: int, batch_size: int, world_size: int = 1, rank: int = 0):
        batches = [list(range(i, min(i + batch_size, n_packs))) for i in range(0, n_packs, batch_size)]
        self.batches = batches[rank::world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for b, packs in enumerate(self.batches):
            yield [(p, 0, b) for p in packs]

    def __len__(self) -> int:
        return len(self.batches)
