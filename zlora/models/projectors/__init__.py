"""Projectors other than gated_conv (zlora/models/projector.py), one module each.

Every module here is imported before the projector registry (zlora.models.registry.PROJECTORS)
is first read, so a new projector is one new file: an ``nn.Module`` class registered with
``@PROJECTORS.register("<kind>")`` that declares its ``Options`` dataclass (see docs/extending.md).
"""
