"""The Speech-LLM (paper §III-A): Whisper encoder -> gated conv projector -> decoder-only LLM.

LLM input per utterance (Eq. 3-5, training):

    Emb(prompt(l)) ⊕ H_proj ⊕ Emb(transcript) ⊕ Emb(EOS)

and the cross-entropy covers only the transcript tokens and EOS. With ``pack_ids`` several
utterances of one language share an LLM row: position ids restart at every utterance, and the
model's own packed-sequence support (transformers detects restarting position ids when no
attention mask is given) makes attention block-diagonal causal -- tested to give the same loss
as one row per utterance, for eager and sdpa. The padded tail of a row is one more "sequence" of
its own, so no padding mask is needed either.

Decoding feeds ``prompt ⊕ H_proj`` and generates (zlora.models.generation).
"""
from __future__ import annotations

import torch
from torch import nn

from zlora.models.config import SpeechLLMConfig
from zlora.models.generation import CausalLMStepper, DecodingOptions, build_decoder
from zlora.models import stages
from zlora.models.prompts import prompts_for
from zlora.models.stages import adapter_language_context
from zlora.utils.log import get_logger

IGNORE = -100
CTC_SCALE = 16.0      # logit scale of the cosine CTC head (a softmax over ~1,000 pieces can peak)
log = get_logger("models")


class SpeechLLM(nn.Module):
    def __init__(self, cfg: SpeechLLMConfig, encoder: nn.Module, projector: nn.Module,
                 llm: nn.Module, tokenizer, languages: list[str]):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.projector, self.llm = encoder, projector, llm
        self.tokenizer = tokenizer
        self.languages = list(languages)
        self._prompt_ids = {lang: tokenizer.encode(text)
                            for lang, text in prompts_for(self.languages, cfg.prompts_file).items()}
        empty = [lang for lang, ids in self._prompt_ids.items() if not ids]
        if empty:
            raise ValueError(f"prompt for {empty[0]} tokenizes to nothing")

    # ---- lengths and prompts -------------------------------------------------------------------
    @property
    def seconds_per_frame(self) -> float:
        """Duration of one input frame: 10 ms mel, or 20 ms for cached encoder states."""
        return 0.02 if self.cfg.encoder.cached_layers > 0 else 0.01

    def speech_token_count(self, n_frames: int) -> int:
        """Speech tokens for ``n_frames`` input frames: ceil(ceil(n/2)/4) for mel, chunked or not
        (chunks have even lengths), ceil(n/4) for cached encoder states."""
        n = torch.tensor([int(n_frames)])
        return int(self.projector.output_lengths(self.encoder.output_lengths(n))[0])

    def max_input_frames(self) -> int | None:
        """Most input frames one utterance may have (non-chunked Whisper: 2 x max_source_positions
        mel frames = 30 s); None when chunked encoding takes any length. Longer input raises
        zlora.models.encoder.InputTooLongError naming the limit."""
        return self.encoder.max_input_frames()

    def prompt_ids(self, lang: str) -> list[int]:
        if lang not in self._prompt_ids:
            raise ValueError(f"no prompt for language {lang!r}; model languages: {', '.join(self.languages)}")
        return list(self._prompt_ids[lang])

    # ---- forward ---------------------------------------------------------------------------------
    def encode_speech(self, feats: torch.Tensor, feat_lens: torch.Tensor, lang_ids: torch.Tensor,
                      chunk_seconds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1-2: feats (B, T, D) -> projected speech (B, S, d_llm), speech_lens (B,)."""
        enc, enc_lens = self.encoder(feats, feat_lens, lang_ids, chunk_seconds)
        return self.projector(enc, enc_lens)

    def forward(self, batch: dict) -> dict:
        """Training loss; batch keys per the contract (feats, feat_lens, lang_ids, text_ids,
        optional pack_ids, chunk_seconds). Returns {loss (mean over target tokens), n_target_tokens}."""
        lang_ids, text_ids = batch["lang_ids"], batch["text_ids"]
        if len(text_ids) != len(lang_ids):
            raise ValueError(f"text_ids has {len(text_ids)} rows but lang_ids {len(lang_ids)}")
        speech, speech_lens = self.encode_speech(batch["feats"], batch["feat_lens"], lang_ids,
                                                 batch.get("chunk_seconds"))
        rows = pack_rows(lang_ids, batch.get("pack_ids"))
        seq = self.training_sequences(speech, speech_lens, lang_ids, text_ids, rows)
        with adapter_language_context(self.llm, seq["row_langs"]):
            hidden = self.llm.base_model(inputs_embeds=seq["embeds"], position_ids=seq["position_ids"],
                                         use_cache=False).last_hidden_state
        targets = seq["labels"][:, 1:]
        sel = targets != IGNORE
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][sel])
        n = int(sel.sum())
        loss = nn.functional.cross_entropy(logits.float(), targets[sel], reduction="sum") / max(n, 1)
        if self.training and self.cfg.ctc_weight > 0:
            ctc = self.ctc_loss(speech, speech_lens, text_ids)
            return {"loss": loss + self.cfg.ctc_weight * ctc, "n_target_tokens": n,
                    "ce_loss": float(loss.detach()), "ctc_loss": float(ctc.detach())}
        return {"loss": loss, "n_target_tokens": n}

    def ctc_loss(self, speech: torch.Tensor, speech_lens: torch.Tensor, text_ids: list[list[int]]) -> torch.Tensor:
        """Auxiliary CTC (not in the paper; ``model.ctc_weight``): speech (B, S, d) -> logits
        (B, S, V) = CTC_SCALE x cosine(speech token, output embedding of each piece), blank = the
        pad piece, targets the transcript pieces. With tied embeddings this pulls each speech
        token towards the direction of the piece it carries (the LLM's RMSNorm discards the
        length anyway). Cosine, not the raw dot product: the small initial embeddings would make
        the projector grow its outputs for hundreds of steps before the logits could peak.
        Mean over utterances of the per-target-token loss; an utterance with fewer speech tokens
        than CTC needs contributes 0 (zero_infinity)."""
        emb = self.llm.get_output_embeddings().weight
        cos = nn.functional.normalize(speech.float(), dim=-1) @ nn.functional.normalize(emb.float(), dim=-1).T
        logp = (CTC_SCALE * cos).log_softmax(-1).transpose(0, 1)
        targets = torch.tensor([int(t) for ids in text_ids for t in ids], device=speech.device)
        target_lens = torch.tensor([len(ids) for ids in text_ids], device=speech.device)
        return nn.functional.ctc_loss(logp, targets, speech_lens, target_lens, blank=self.tokenizer.pad_id,
                                      reduction="mean", zero_infinity=True)

    def training_sequences(self, speech: torch.Tensor, speech_lens: torch.Tensor, lang_ids: torch.Tensor,
                           text_ids: list[list[int]], rows: list[list[int]]) -> dict:
        """Lay out LLM rows: per utterance prompt ⊕ speech ⊕ text ⊕ EOS (Eq. 4), utterances of a
        row back to back, right-padded. Returns embeds (R, L, d), labels (R, L) (IGNORE except text
        and EOS), position_ids (R, L) restarting per utterance (and for the pad tail), row_langs (R,)."""
        eos, pad = self.tokenizer.eos_id, self.tokenizer.pad_id
        text_ids = [[int(t) for t in ids] for ids in text_ids]
        self._check_token_ids(text_ids)
        s_lens = speech_lens.tolist()
        ids, labels, pos, is_speech = [], [], [], []
        for row in rows:
            r_ids, r_lab, r_pos, r_sp = [], [], [], []
            for u in row:
                p = self._prompt_ids[self.languages[int(lang_ids[u])]]
                y = text_ids[u] + [eos]
                s = s_lens[u]
                r_ids += p + [pad] * s + y
                r_lab += [IGNORE] * (len(p) + s) + y
                r_pos += range(len(p) + s + len(y))
                r_sp += [False] * len(p) + [True] * s + [False] * len(y)
            ids.append(r_ids), labels.append(r_lab), pos.append(r_pos), is_speech.append(r_sp)
        width = max(len(r) for r in ids)
        for r_ids, r_lab, r_pos, r_sp in zip(ids, labels, pos, is_speech):
            n_pad = width - len(r_ids)
            r_ids += [pad] * n_pad
            r_lab += [IGNORE] * n_pad
            r_pos += range(n_pad)
            r_sp += [False] * n_pad
        dev = speech.device
        order = torch.tensor([u for row in rows for u in row], device=dev)
        embeds = self._embed_with_speech(torch.tensor(ids, device=dev), torch.tensor(is_speech, device=dev),
                                         speech, speech_lens, order)
        row_langs = torch.stack([lang_ids[row[0]] for row in rows]).to(dev)
        return {"embeds": embeds, "labels": torch.tensor(labels, device=dev),
                "position_ids": torch.tensor(pos, device=dev), "row_langs": row_langs}

    def _check_token_ids(self, text_ids: list[list[int]]) -> None:
        n_vocab = self.llm.get_input_embeddings().num_embeddings
        for i, ids in enumerate(text_ids):
            bad = [t for t in ids if not 0 <= t < n_vocab]
            if bad:
                raise ValueError(f"text_ids row {i}: token id {bad[0]} outside the LLM vocabulary "
                                 f"(0..{n_vocab - 1}); was the text tokenized with another tokenizer?")

    def _embed_with_speech(self, ids: torch.Tensor, is_speech: torch.Tensor, speech: torch.Tensor,
                           speech_lens: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ids (R, L) with speech frames written into the is_speech slots,
        taken from utterances in ``order`` (the row-major order of the slots)."""
        embeds = self.llm.get_input_embeddings()(ids)
        valid = torch.arange(speech.shape[1], device=speech.device)[None, :] < speech_lens[:, None]
        frames = speech[order][valid[order]].to(embeds.dtype)
        return embeds.masked_scatter(is_speech[..., None], frames)

    # ---- decoding ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, feats: torch.Tensor, feat_lens: torch.Tensor, lang_ids: torch.Tensor,
                 options: DecodingOptions | None = None) -> list[list[int]]:
        """Transcript token ids per row (no EOS). feats (B, T, D), feat_lens (B,), lang_ids (B,)."""
        options = options or DecodingOptions()
        speech, speech_lens = self.encode_speech(feats, feat_lens, lang_ids)
        embeds, mask = self.decoding_prefix(speech, speech_lens, lang_ids)
        stepper = CausalLMStepper(self.llm, lang_ids.to(embeds.device))
        decoder = build_decoder(options)
        return decoder.decode(stepper, embeds, mask, options.limits(speech_lens), self.tokenizer.eos_id)

    def decoding_prefix(self, speech: torch.Tensor, speech_lens: torch.Tensor,
                        lang_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prompt ⊕ speech per row, LEFT-padded: embeds (B, L, d), attention mask (B, L)."""
        pad = self.tokenizer.pad_id
        s_lens = speech_lens.tolist()
        prompts = [self._prompt_ids[self.languages[int(l)]] for l in lang_ids]
        width = max(len(p) + s for p, s in zip(prompts, s_lens))
        ids, is_speech, mask = [], [], []
        for p, s in zip(prompts, s_lens):
            n_pad = width - len(p) - s
            ids.append([pad] * n_pad + p + [pad] * s)
            is_speech.append([False] * (n_pad + len(p)) + [True] * s)
            mask.append([0] * n_pad + [1] * (len(p) + s))
        dev = speech.device
        order = torch.arange(len(s_lens), device=dev)
        embeds = self._embed_with_speech(torch.tensor(ids, device=dev), torch.tensor(is_speech, device=dev),
                                         speech, speech_lens, order)
        return embeds, torch.tensor(mask, device=dev)

    # ---- stages and checkpoints ----------------------------------------------------------------
    def set_stage(self, stage: int, adapter_cfg=None) -> None:
        """§IV-F policy: 1 = encoder+projector+LLM-LoRA train; 2 = encoder frozen, adapters added."""
        stages.apply_stage(self, stage, adapter_cfg)
        log.info("stage %d parameters:\n%s", stage, self.parameter_table())

    def parameter_table(self) -> str:
        return stages.parameter_table(self)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return stages.trainable_state_dict(self)

    def load_trainable_state_dict(self, sd: dict[str, torch.Tensor], strict: bool = True) -> None:
        stages.load_trainable_state_dict(self, sd, strict)


def pack_rows(lang_ids: torch.Tensor, pack_ids: torch.Tensor | None) -> list[list[int]]:
    """Utterance indices per LLM row: one per utterance, or grouped by pack id (in order of first
    appearance, utterances in batch order). A pack mixing languages is an error."""
    if pack_ids is None:
        return [[i] for i in range(len(lang_ids))]
    if len(pack_ids) != len(lang_ids):
        raise ValueError(f"pack_ids has {len(pack_ids)} entries but the batch has {len(lang_ids)}")
    rows: dict[int, list[int]] = {}
    for i, p in enumerate(pack_ids.tolist()):
        rows.setdefault(p, []).append(i)
    langs = lang_ids.tolist()
    for p, row in rows.items():
        if len({langs[i] for i in row}) > 1:
            raise ValueError(f"pack {p} mixes languages {sorted({langs[i] for i in row})}; "
                             "packing must be language-homogeneous")
    return list(rows.values())


def build_speech_llm(cfg: SpeechLLMConfig, languages: list[str]) -> SpeechLLM:
    """Encoder + projector + LLM (+ LLM-side LoRA) from ``cfg``; stage policy not yet applied."""
    from zlora.models.encoder import build_encoder
    from zlora.models.llm import build_llm, llm_hidden_size
    from zlora.models.projector import build_projector

    if not languages or len(set(languages)) != len(languages):
        raise ValueError(f"languages must be a non-empty list without duplicates, got {languages}")
    encoder = build_encoder(cfg.encoder)
    llm, tokenizer = build_llm(cfg.llm)
    projector = build_projector(cfg.projector.kind, encoder.d_model, llm_hidden_size(llm), cfg.projector.conf)
    if cfg.llm_lora.enabled:
        apply_llm_lora(llm, cfg, languages)
    model = SpeechLLM(cfg, encoder, projector, llm, tokenizer, languages)
    return model


def apply_llm_lora(llm: nn.Module, cfg: SpeechLLMConfig, languages: list[str]) -> list[str]:
    """Plain LoRA (Eq. 7) on the LLM's linear layers. ``languages`` is carried only so that one
    language_context can span the whole model; a ``lora`` layer ignores the language."""
    from zlora.adapters import AdapterConfig, apply_adapters
    from zlora.adapters.apply import check_rank_fits

    lc = cfg.llm_lora
    acfg = AdapterConfig(kind="lora", rank=lc.rank, alpha=lc.alpha, dropout=lc.dropout,
                         languages=list(languages), target_modules=lc.target_modules)
    check_rank_fits(llm, acfg, "model.llm_lora.rank")
    names = apply_adapters(llm, acfg)
    if not names:
        from zlora.config import ConfigError

        raise ConfigError(f"model.llm_lora.target_modules {lc.target_modules!r} matches no linear "
                          "layer of the LLM")
    return names
