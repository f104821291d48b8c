"""What a decode's outputs are made from, and which paths a decode may write (zlora.bin.decode).

:func:`decode_record` is the provenance record of every part and of the merged ``OUT/text``
(zlora.decode.jobs): a finished decode dir is reused only for the same model weights, features,
language list of the data, decoding options and language source. :func:`check_inputs` keeps the
output dir apart from every input (``--out`` equal to the data dir once overwrote the reference
``text`` with hypotheses).
"""
from __future__ import annotations

import os
from pathlib import Path

from zlora.config import to_dict
from zlora.utils.io import check_outputs_apart, table_fingerprint
from zlora.utils.provenance import file_sha256, files_sha256, value_sha256

# Config keys that say where things are, not how they are decoded: replaced by the fingerprints
# of what they point to (exp, data, feats) or irrelevant to the result (out, nj: the split dir
# and the parts' utterance lists already depend on nj).
NOT_OPTIONS = ("exp", "data", "feats", "out", "nj", "lang")
MODEL_FILES = ("model.safetensors", "config.yaml", "frozen.json")


def decode_record(cfg) -> dict[str, str]:
    """{model, feats, utt2lang, options, lang} fingerprints of one set's decode (a DecodeConfig
    with single paths)."""
    final = Path(cfg.exp) / "final"
    utt2lang = Path(cfg.data) / "utt2lang"
    options = {k: v for k, v in to_dict(cfg).items() if k not in NOT_OPTIONS}
    return {"model": files_sha256(final / name for name in MODEL_FILES),
            "feats": input_fingerprint(cfg),
            "utt2lang": file_sha256(utt2lang) if utt2lang.is_file() else "absent",
            "options": value_sha256(options),
            "lang": value_sha256(language_source(cfg.lang))}


def input_fingerprint(cfg) -> str:
    """The decoded inputs: the feats.scp (or raw audio table), else the data dir's wav.scp and
    segments (raw audio read through the data dir)."""
    if cfg.feats:
        return table_fingerprint(cfg.feats)
    return table_fingerprint(Path(cfg.data) / "wav.scp", Path(cfg.data) / "segments")


def language_source(lang) -> dict:
    """The ``lang:`` section with its input files replaced by their fingerprints."""
    out = dict(to_dict(lang))
    if lang.feats:
        out["feats"] = table_fingerprint(lang.feats)
    if lang.posteriors and os.path.isfile(lang.posteriors):
        out["posteriors"] = file_sha256(lang.posteriors)
    if lang.whisper_dir and os.path.isdir(lang.whisper_dir):
        out["whisper_dir"] = files_sha256(sorted(Path(lang.whisper_dir).glob("*.safetensors")))
    return out


def check_inputs(cfg) -> None:
    """Before a set's decode writes anything: ``--out`` must neither be nor contain an input, and
    ``--feats`` must be what the model reads (log-mel, or a cache of its bottom layers; checked
    from the model's config here, against its weights again in each part)."""
    check_outputs_apart({"--out": cfg.out},
                        {"--data": cfg.data, "--feats": cfg.feats, "--exp": Path(cfg.exp) / "final",
                         "--lang.feats": cfg.lang.feats, "--lang.posteriors": cfg.lang.posteriors})
    final = Path(cfg.exp) / "final"
    dumped = getattr(cfg, "feats_type", "dumped") == "dumped"       # raw audio: the model's own front end
    if dumped and (final / "model.safetensors").is_file() and (final / "config.yaml").is_file():
        from zlora.data.feature_source import ModelInput, check_features_fit
        from zlora.train.config import read_train_config

        check_features_fit(cfg.feats, ModelInput.of_config(read_train_config(final / "config.yaml").model.encoder))
