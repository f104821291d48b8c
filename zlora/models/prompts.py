"""The language-specific transcription prompts (paper §III-A, Eq. 3), one file for train and decode."""
from __future__ import annotations

import functools
from pathlib import Path

from zlora.config import ConfigError, read_yaml

DEFAULT_PROMPTS_FILE = Path(__file__).resolve().parent.parent / "resources" / "prompts.yaml"


@functools.lru_cache(maxsize=8)
def _load(path: str) -> dict[str, str]:
    data = read_yaml(path)
    prompts = data.get("prompts")
    if not isinstance(prompts, dict) or not prompts:
        raise ConfigError(f"{path}: expected a top-level mapping 'prompts: {{lang: text}}'")
    for lang, text in prompts.items():
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{path}: prompt for language {lang!r} must be a non-empty string")
    return dict(prompts)


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """{lang: prompt text} from ``path`` (default zlora/resources/prompts.yaml)."""
    return dict(_load(str(path or DEFAULT_PROMPTS_FILE)))


def prompts_for(languages: list[str], path: str | Path | None = None) -> dict[str, str]:
    """Prompts for exactly ``languages``; a language without a prompt is an error naming the file."""
    prompts = load_prompts(path)
    missing = [lang for lang in languages if lang not in prompts]
    if missing:
        raise ConfigError(f"{path or DEFAULT_PROMPTS_FILE}: no prompt for language(s) "
                          f"{', '.join(missing)}; add them (the prompt must say 'Please transcribe "
                          "the audio content into text.' in that language)")
    return {lang: prompts[lang] for lang in languages}
