"""Registries of the model slots: ``encoder.kind`` and ``projector.kind`` name an entry here."""
from __future__ import annotations

from zlora.registry import Registry

ENCODERS: Registry = Registry("encoder")
PROJECTORS: Registry = Registry("projector")
