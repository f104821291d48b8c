"""Registries of the model slots: ``encoder.kind`` and ``projector.kind`` name an entry here."""
from __future__ import annotations

from zlora.registry import ModuleRegistry, Registry

ENCODERS: Registry = Registry("encoder")
# A projector is an nn.Module class with an ``Options`` dataclass (its ``model.projector.conf``),
# registered where it is defined: gated_conv in zlora/models/projector.py, any other in its own
# module of zlora/models/projectors/ (all imported before the registry is first read).
PROJECTORS: ModuleRegistry = ModuleRegistry("projector",
                                            ("zlora.models.projector", "zlora.models.projectors"))
