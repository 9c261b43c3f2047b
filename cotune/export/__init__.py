"""Edge export: merge the tuned LoRA into the SLM and ship it as an ONNX model with a KV cache (fp32/int8/int4).

The API below loads torch and the exporters only when first used, so importing the package stays light.

    from cotune.export import export_edge_model, measure_decode_speed
"""

from typing import Any

_API = {
    "export_edge_model": "cotune.export.pipeline",
    "ExportResult": "cotune.export.pipeline",
    "ExportInputError": "cotune.export.inputs",
    "measure_decode_speed": "cotune.edge_runtime.speed",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'cotune.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_API[name]), name)
