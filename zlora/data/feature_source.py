"""Do these features fit this model? Checked before training or decoding reads them.

A model with ``model.encoder.cached_layers = N`` reads the states ``zlora.bin.dump_encoder`` wrote
after N layers (``OUT/meta.yaml`` records the layer count and the sha256 of the encoder weights
that computed them); a model with ``cached_layers: 0`` reads log-mel features from
``zlora.bin.dump_feats``. Given the wrong kind, a run used to fail 90 lines deep in the encoder
(log-mel to a cached-layer model) or, worse, train and decode without a word (the states after 6
layers given to a ``cached_layers: 5`` model: both are 512 wide). :func:`check_features_fit`
compares the width of the first matrix, and the cache's ``meta.yaml`` when there is one, with
the model, and names the feats.scp, the meta.yaml and both values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from zlora.utils.cli import UserError
from zlora.utils.log import get_logger
from zlora.utils.provenance import short

log = get_logger("data")
CACHE_META = "meta.yaml"


@dataclass
class ModelInput:
    """What a model's encoder reads: log-mel (``cached_layers`` 0, ``n_mels`` wide) or the states
    after ``cached_layers`` layers (``d_model`` wide). ``fingerprint(n)``: sha256 of the weights
    that compute the first n layers (zlora.models.encoder.encoder_fingerprint), when known."""
    cached_layers: int
    n_mels: int
    d_model: int
    fingerprint: Optional[Callable[[int], str]] = None

    @classmethod
    def of_model(cls, model) -> "ModelInput":
        from zlora.models.encoder import encoder_fingerprint

        enc = model.encoder
        return cls(enc.cfg.cached_layers, enc.conv1.in_channels, enc.d_model,
                   lambda n: encoder_fingerprint(enc, n))

    @classmethod
    def of_config(cls, enc_cfg) -> "ModelInput":
        """From a model config alone (no weights loaded): no fingerprint."""
        if enc_cfg.config is not None:
            d_model = int(enc_cfg.config.get("d_model", 0))
        else:
            path = Path(enc_cfg.whisper_dir) / "config.json"
            d_model = int(json.loads(path.read_text(encoding="utf-8"))["d_model"]) if path.is_file() else 0
        return cls(enc_cfg.cached_layers, enc_cfg.n_mels, d_model)

    @property
    def width(self) -> int:
        return self.d_model if self.cached_layers else self.n_mels


def check_features_fit(feats_scp: str | Path, want: ModelInput) -> None:
    """Raise UserError when ``feats_scp`` holds another kind of features than the model reads."""
    feats_scp = Path(feats_scp)
    meta = read_cache_meta(feats_scp)
    _check_kind(feats_scp, meta, want)
    width = first_width(feats_scp)
    if width is not None and want.width and width != want.width:
        raise UserError(f"{feats_scp}: matrices are {width} wide, the model reads {_describe(want)}; "
                        f"{_remedy(want)}")
    if meta is None or not want.cached_layers:
        if want.cached_layers:
            log.warning("%s: no %s next to it, so it cannot be checked against the model's bottom %d "
                        "layers (write caches with python -m zlora.bin.dump_encoder)",
                        feats_scp, CACHE_META, want.cached_layers)
        return
    _check_weights(feats_scp.parent / CACHE_META, meta, want)


def read_cache_meta(feats_scp: Path) -> dict | None:
    """The dump_encoder record next to a feats.scp, or None (a dump_feats dump, or no record)."""
    path = feats_scp.parent / CACHE_META
    if not path.is_file():
        return None
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable encoder-cache record: {e}") from e
    return meta if isinstance(meta, dict) and "layers" in meta else None


def first_width(feats_scp: Path) -> int | None:
    """Columns of the first matrix of a feats.scp (None for an empty one)."""
    import kaldiio

    feats = kaldiio.load_scp(str(feats_scp))
    first = next(iter(feats), None)
    if first is None:
        return None
    try:
        mat = feats[first]
    except Exception as e:  # kaldiio raises assorted errors on truncated/corrupt arks
        raise UserError(f"{feats_scp}: cannot read features of utterance '{first}': {e}") from e
    return int(mat.shape[1]) if mat.ndim == 2 else None


def _describe(want: ModelInput) -> str:
    if want.cached_layers:
        return (f"the encoder states after {want.cached_layers} layer(s) (model.encoder.cached_layers="
                f"{want.cached_layers}), {want.d_model} wide, as python -m zlora.bin.dump_encoder writes them")
    return f"{want.n_mels}-bin log-mel features (model.encoder.cached_layers=0)"


def _remedy(want: ModelInput) -> str:
    if want.cached_layers:
        return (f"give the feats.scp of an encoder cache (dump_encoder --layers {want.cached_layers}), "
                "not log-mel features")
    return "give the feats.scp of python -m zlora.bin.dump_feats"


def _check_kind(feats_scp: Path, meta: dict | None, want: ModelInput) -> None:
    """An encoder cache for a log-mel model, or a cache of another depth, is refused."""
    if meta is None:
        return
    path = feats_scp.parent / CACHE_META
    if not want.cached_layers:
        raise UserError(f"{feats_scp}: an encoder cache ({path}: {meta['layers']} layers), but the model "
                        f"reads {_describe(want)}; {_remedy(want)}")
    if meta["layers"] != want.cached_layers:
        raise UserError(f"{path}: this cache holds the states after {meta['layers']} layers, the model "
                        f"reads {_describe(want)}; give the cache of dump_encoder --layers "
                        f"{want.cached_layers}")


def _check_weights(path: Path, meta: dict, want: ModelInput) -> None:
    """The cache must come from the weights of the model's own bottom layers."""
    recorded = meta.get("fingerprint")
    if want.fingerprint is None or not recorded:
        return
    current = want.fingerprint(want.cached_layers)
    if current != recorded:
        raise UserError(f"{path}: the cache was computed by encoder weights {short(recorded)} (sha256), "
                        f"this model's bottom {want.cached_layers} layer(s) are {short(current)}; redo it "
                        "with python -m zlora.bin.dump_encoder (--encoder_state the stage-1 "
                        "model.safetensors whose encoder this model uses)")
