"""ONNX weight quantization of an exported fp32 decoder: int8 dynamic and int4 weight-only (MatMulNBits).

Both quantizers only touch a node whose weight is a graph initializer, and only MatMul (plus Gather for int4):
exporters hide weights behind `Transpose(initializer)` (a tied lm_head, the builder's shared embedding) and
`Gemm` (GPT-2's Conv1D). `normalize_weights` folds those into plain initializers and MatMuls first, so every
projection, the lm_head and the embedding table are reachable.

- int8: onnxruntime.quantization.quantize_dynamic, per-channel int8 weights, activations quantized at run
  time (MatMulInteger) with one scale per tensor. The MLP down projections stay fp32 (`down_projections`), and
  so does the embedding table (Gather): dynamic quantization of Gather is one scale for the whole table.
- int4: MatMulNBitsQuantizer, symmetric blocks of `block_size` weights with one fp32 scale each, MatMul ->
  MatMulNBits and Gather -> GatherBlockQuantized, accuracy level 4 (int8 activations in the kernel).
"""

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT4_BLOCK_SIZE = 32
INT4_ACCURACY_LEVEL = 4  # int8 activations inside MatMulNBits on CPU


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """Replace `Transpose(initializer)` by a transposed initializer; returns how many were folded."""
    inits, folded = _initializers(model), 0
    for node in list(model.graph.node):
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[0]])
        perm = _attr(node, "perm", list(reversed(range(weight.ndim))))
        new = numpy_helper.from_array(np.ascontiguousarray(weight.transpose(perm)), node.output[0])
        model.graph.initializer.append(new)
        model.graph.node.remove(node)
        folded += 1
    _drop_unused_initializers(model)
    return folded


def gemms_to_matmuls(model: onnx.ModelProto) -> int:
    """Rewrite `Gemm(A, W[, C])` with a constant W (alpha = beta = 1, A not transposed) as MatMul [+ Add]."""
    inits, rewritten = _initializers(model), 0
    nodes = list(model.graph.node)
    for node in nodes:
        if node.op_type != "Gemm" or node.input[1] not in inits:
            continue
        if _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0 or _attr(node, "transA", 0):
            continue
        weight_name = node.input[1]
        if _attr(node, "transB", 0):
            weight = numpy_helper.to_array(inits[weight_name]).T
            weight_name = f"{weight_name}.T"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}.matmul" if has_bias else node.output[0]
        new_nodes = [helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{node.name}.MatMul")]
        if has_bias:
            new_nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}.Add"))
        index = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for offset, new in enumerate(new_nodes):
            model.graph.node.insert(index + offset, new)
        rewritten += 1
    _drop_unused_initializers(model)
    return rewritten


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for init in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(init)


def normalize_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    fold_weight_transposes(model)
    gemms_to_matmuls(model)
    return model


def down_projections(model: onnx.ModelProto) -> list[str]:
    """MatMuls whose constant weight narrows its input (K > N): the MLP's down projection (Llama's down_proj,
    GPT-2's mlp.c_proj). Its input, the activated intermediate, carries an LLM's massive activations (on the tuned
    SmolLM2-90M up to 3,000, some 20,000 times the mean): one int8 scale per tensor rounds the rest to zero, and
    quantizing these MatMuls cost 23 points of task accuracy against 0.7 with them kept fp32."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    narrowing = [
        node
        for node in model.graph.node
        if node.op_type == "MatMul" and len(shape := shapes.get(node.input[1], ())) == 2 and shape[0] > shape[1]
    ]
    unnamed = [node.output[0] for node in narrowing if not node.name]
    if unnamed:
        raise ValueError(f"MatMul nodes without a name cannot be kept out of quantization: {unnamed[:3]}")
    return [node.name for node in narrowing]


def quantize_int8_dynamic(src: Path, dst: Path) -> None:
    """int8 weights (per output channel) with dynamically quantized activations, written to `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = normalize_weights(onnx.load(str(src)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        model,
        str(dst),
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=down_projections(model),
        per_channel=True,
        weight_type=QuantType.QInt8,
        use_external_data_format=True,
    )


def quantize_int4_weights(
    src: Path, dst: Path, block_size: int = INT4_BLOCK_SIZE, accuracy_level: int = INT4_ACCURACY_LEVEL
) -> None:
    """int4 weight-only (MatMulNBits / GatherBlockQuantized) copy of `src` at `dst`."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # one INFO line per node otherwise
    quantizer = MatMulNBitsQuantizer(
        normalize_weights(onnx.load(str(src))),
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=accuracy_level,
        op_types_to_quantize=("MatMul", "Gather"),
    )
    quantizer.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)
