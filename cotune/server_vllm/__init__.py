"""The server's generation engine: vLLM in its own process, or HF in process, with LoRA adapters loaded live.

Import `cotune.server_vllm.engine` (`open_engine`, `Sampling`). What an algorithm asks of the engine lives with
the algorithm (CrossLM's prompts and filters: `cotune.algorithms.crosslm.generation`).
"""
