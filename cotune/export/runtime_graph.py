"""LoRA inputs in a model-builder graph: the base stays as exported (int4/int8/fp32), each decoder linear layer gains
an fp32 LoRA branch whose weights are graph inputs, fed at run time from an `.onnx_adapter` file.

For a linear layer X -> MatMul(NBits) -> Y the graph becomes Y' = Y + (X @ A) @ B, with A (in, r) and B (r, out)
inputs named by cotune.export.runtime_adapter.lora_input_names. Each input also has an empty default (in x 0,
0 x out) as an overridable initializer: with no adapter active the branch adds zeros and the graph is the base.
The builder packs q/k/v (and gate/up, where it does) into one MatMul: their branches run side by side and are
concatenated in the packed order before the Add, so adapters stay per module as peft saves them.

Graph surgery on the builder's output rather than the builder's own `adapter_path` option: that one writes the
LoRA weights into the graph as constants (one model per adapter) and quantizes them with the base.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cotune.export.runtime_adapter import lora_input_names

# builder node path part -> (HF submodule, the HF linear layers it computes, in packed output order)
BUILDER_BLOCKS = {"attn": "self_attn", "mlp": "mlp"}
PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
MATMUL_OPS = ("MatMul", "MatMulNBits")


def _linear_nodes(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, int, str, tuple[str, ...]]]:
    """(node, layer, HF block, HF linear layers) for every decoder linear MatMul the builder wrote."""
    found = []
    for node in graph.node:
        parts = node.name.split("/")  # "", "model", "layers.3", "attn", "qkv_proj", "MatMul_Q4"
        if node.op_type not in MATMUL_OPS or len(parts) != 6 or parts[1] != "model" or not parts[2].startswith("layers."):
            continue
        if parts[3] not in BUILDER_BLOCKS or "lora" in parts:
            continue
        found.append((node, int(parts[2].split(".")[1]), BUILDER_BLOCKS[parts[3]], PACKED.get(parts[4], (parts[4],))))
    return found


def add_lora_inputs(onnx_path: Path, shapes: dict[str, tuple[int, int]]) -> list[str]:
    """Give every decoder linear layer of the builder graph at `onnx_path` a LoRA branch fed by graph inputs.

    `shapes`: {HF module name: (in_features, out_features)} of the base. Rewrites the graph file in place (the
    weights file is untouched); returns the HF module names that received inputs."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    linear = _linear_nodes(graph)
    if not linear:
        raise ValueError(f"{onnx_path}: no decoder MatMul named like the model builder's (/model/layers.N/attn|mlp/...)")
    modules, after = [], {}
    for node, layer, block, names in linear:
        new_nodes = after[node.name] = []
        x, y = node.input[0], node.output[0]
        branch_outputs = []
        for name in names:
            module = f"model.layers.{layer}.{block}.{name}"
            if module not in shapes:
                raise ValueError(f"{onnx_path}: node {node.name} computes {module}, which the base model lacks")
            fan_in, fan_out = shapes[module]
            a, b = lora_input_names(module)
            rank = f"lora_rank_{layer}_{name}"
            graph.input.extend(
                [
                    helper.make_tensor_value_info(a, TensorProto.FLOAT, [fan_in, rank]),
                    helper.make_tensor_value_info(b, TensorProto.FLOAT, [rank, fan_out]),
                ]
            )
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.zeros((fan_in, 0), np.float32), a),
                    numpy_helper.from_array(np.zeros((0, fan_out), np.float32), b),
                ]
            )
            base = f"/model/layers.{layer}/lora/{name}"
            new_nodes += [
                helper.make_node("MatMul", [x, a], [f"{base}/A/output_0"], name=f"{base}/A/MatMul"),
                helper.make_node("MatMul", [f"{base}/A/output_0", b], [f"{base}/B/output_0"], name=f"{base}/B/MatMul"),
            ]
            branch_outputs.append(f"{base}/B/output_0")
            modules.append(module)
        delta = branch_outputs[0]
        if len(branch_outputs) > 1:
            delta = f"{node.name}/lora/Concat/output_0"
            new_nodes.append(helper.make_node("Concat", branch_outputs, [delta], name=f"{node.name}/lora/Concat", axis=-1))
        merged = f"{node.name}/lora/Add/output_0"
        for consumer in graph.node:
            for i, name in enumerate(consumer.input):
                if name == y:
                    consumer.input[i] = merged
        for output in graph.output:
            if output.name == y:
                raise ValueError(f"{onnx_path}: {y} is a graph output; cannot add a LoRA branch after it")
        new_nodes.append(helper.make_node("Add", [y, delta], [merged], name=f"{node.name}/lora/Add"))
    ordered = []  # ONNX wants topological order: each branch right after the MatMul whose output it adds to
    for node in graph.node:
        ordered += [node, *after.get(node.name, [])]
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.save(model, str(onnx_path))
    return modules
