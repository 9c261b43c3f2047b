"""Model specs -> HF folders (registry, GGUF conversion, depth pruning, tiny test models)."""

from cotune.models.registry import REGISTRY, resolve_model

__all__ = ["REGISTRY", "resolve_model"]
