"""The one home for precision decisions: quantized loading, adapter compression on the wire, ONNX weights."""
