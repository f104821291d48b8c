"""Adapter kinds by short name (``adapter.kind`` in YAML)."""
from zlora.registry import Registry

ADAPTER_KINDS = Registry("adapter kind")
