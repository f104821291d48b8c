"""The files of a local Hugging Face Whisper dir, single-file or sharded, checked with messages
that name the file.

Whisper-base ships one ``model.safetensors``; Whisper-large-v3 ships shards
(``model-0000k-of-0000n.safetensors``) and ``model.safetensors.index.json``, whose ``weight_map``
says which shard holds each tensor. Every zlora reader of a Whisper dir (the encoder, the LID
embeddings, their provenance, prep_check) goes through :func:`weight_map` so that both layouts
work everywhere, and fail alike.
"""
from __future__ import annotations

import json
from pathlib import Path

from zlora.utils.cli import UserError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
GENERATION_CONFIG = "generation_config.json"
EMBED_KEY = "model.decoder.embed_tokens.weight"
HINT = ("give a Hugging Face Whisper dir as the hub ships it (openai/whisper-large-v3: config.json, "
        f"{GENERATION_CONFIG}, and {SINGLE} or its shards with {INDEX}); for Whisper-base, "
        "`python -m zlora.bin.convert_whisper DIR` builds one")


class WhisperDirError(UserError):
    """A Whisper dir lacks a file zlora reads, or holds a broken one; the message names it."""


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of the dir: the shards its index names, or model.safetensors."""
    return sorted(set(weight_map(path).values()))


def weight_map(path: str | Path) -> dict[str, Path]:
    """{tensor name: file holding it}. From the index when there is one (every shard it names
    must exist), else from model.safetensors' header."""
    path = Path(path)
    if (path / INDEX).is_file():
        return _index_map(path / INDEX)
    if (path / SINGLE).is_file():
        return {key: path / SINGLE for key in _header_keys(path / SINGLE)}
    raise WhisperDirError(f"{path}: no {SINGLE} and no {INDEX} (zlora loads safetensors only, never "
                          f"pickled .bin weights); {HINT}")


def _index_map(index: Path) -> dict[str, Path]:
    try:
        wmap = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError, AttributeError) as e:
        raise WhisperDirError(f"{index}: not a readable safetensors index ({e})") from None
    if not isinstance(wmap, dict) or not wmap:
        raise WhisperDirError(f"{index}: no weight_map (tensor -> shard file)")
    missing = sorted({f for f in wmap.values() if not (index.parent / f).is_file()})
    if missing:
        raise WhisperDirError(f"{index} names shard(s) that are not in {index.parent}: {', '.join(missing)} "
                              "(an interrupted download?)")
    return {key: index.parent / f for key, f in wmap.items()}


def _header_keys(file: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own types for truncated / corrupt files
        raise WhisperDirError(f"{file}: not a readable safetensors file (truncated or corrupt?): {e}") from e


def read_tensor(path: str | Path, key: str):
    """One tensor of the dir, read from the file that holds it (the rest is never loaded)."""
    from safetensors import safe_open

    file = weight_map(path).get(key)
    if file is None:
        raise WhisperDirError(f"{path} has no tensor {key}: not a Whisper checkpoint")
    with safe_open(str(file), framework="pt") as f:
        return f.get_tensor(key)


def language_tokens(path: str | Path) -> dict[str, int]:
    """{'en': 50259, ...} from the dir's generation_config.json (its lang_to_id)."""
    gen_file = Path(path) / GENERATION_CONFIG
    if not gen_file.is_file():
        raise WhisperDirError(f"{gen_file} is missing: it holds the language tokens (lang_to_id) that "
                              f"LID needs; {HINT}")
    try:
        lang_to_id = json.loads(gen_file.read_text(encoding="utf-8")).get("lang_to_id")
    except (OSError, ValueError, AttributeError) as e:
        raise WhisperDirError(f"{gen_file}: not a readable generation config ({e})") from None
    if not lang_to_id:
        raise WhisperDirError(f"{gen_file} has no lang_to_id: not a multilingual Whisper checkpoint")
    return {tok[2:-2]: int(i) for tok, i in lang_to_id.items()}


def provenance_files(path: str | Path) -> list[Path]:
    """The files whose content LID embeddings are made from: weights (and index), generation config."""
    path = Path(path)
    index = [path / INDEX] if (path / INDEX).is_file() else []
    return [*weight_files(path), *index, path / GENERATION_CONFIG]


def check_whisper_dir(path: str | Path) -> str:
    """What stage 3 (zlora.bin.extract_lid) needs, checked up front: readable weights (single or
    sharded) holding the decoder embeddings, and the language tokens. Returns a summary."""
    wmap = weight_map(path)
    files = sorted(set(wmap.values()))
    headers = {f: set(_header_keys(f)) for f in files}     # every shard readable, not just listed
    if EMBED_KEY not in wmap or EMBED_KEY not in headers[wmap[EMBED_KEY]]:
        raise WhisperDirError(f"{path}: the weights hold no {EMBED_KEY} (the LID embeddings): not a "
                              f"WhisperForConditionalGeneration checkpoint; {HINT}")
    langs = language_tokens(path)
    layout = SINGLE if len(files) == 1 and files[0].name == SINGLE else f"{len(files)} shard(s) + {INDEX}"
    return f"{layout}, {len(langs)} language tokens"
