"""Export through transformers' own exporter (torch.onnx dynamo) for architectures the model builder lacks.

One graph serves prefill and decode: the decode step is captured from a real `generate()` with two steps merged
(`multi_token_decode`), so its query length stays dynamic, and an empty (length-0) cache makes it a prefill;
`sample`, the text it is traced on, is the pipeline's first parity prompt. Batch is fixed at 1 and there is no
attention_mask input (what the exporter produces): the device runtime decodes one sequence at a time. Cache
tensors are `input.past_key_values.*` -> `output.past_key_values.*`.
"""

import json
from pathlib import Path

from cotune.edge_runtime.layout import EDGE_CONFIG


def export_decoder(merged: Path, out: Path, sample: str) -> None:
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.exporters import OnnxConfig, OnnxExporter
    from transformers.exporters.utils import decompose_prefill_decode

    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    inputs = tokenizer(sample, return_tensors="pt", add_special_tokens=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.generation_config.pad_token_id = pad
    decode_model, decode_inputs = decompose_prefill_decode(
        model, {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask}, multi_token_decode=True
    )["decode"]
    cache = decode_inputs["past_key_values"]
    keys = [layer.keys for layer in cache.layers]
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        OnnxExporter().export(
            decode_model,
            copy.deepcopy(decode_inputs),
            config=OnnxConfig(dynamic=True, output_path=str(out / "model.onnx"), external_data=True),
        )
    eos = model.generation_config.eos_token_id
    config = model.config
    (out / EDGE_CONFIG).write_text(
        json.dumps(
            {
                "onnx_file": "model.onnx",
                "architecture": config.architectures[0],
                "num_layers": len(keys),
                "num_kv_heads": int(keys[0].shape[1]),
                "head_dim": int(keys[0].shape[3]),
                "context_length": int(getattr(config, "max_position_embeddings", 0) or config.n_positions),
                "eos_token_ids": eos if isinstance(eos, list) else ([eos] if eos is not None else []),
                "exporter": "transformers.exporters.OnnxExporter (torch.onnx dynamo), decode graph",
            },
            indent=2,
        )
    )
    tokenizer.save_pretrained(out)

