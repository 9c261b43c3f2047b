"""The server's generation engine (vLLM in its own process, or HF in process) and synthetic data generation.

Import `cotune.server_vllm.engine` (`open_engine`, `Sampling`) and `cotune.server_vllm.synthetic`.
"""
