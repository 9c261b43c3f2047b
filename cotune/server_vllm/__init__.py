"""The server's generation engine (vLLM in its own process, or HF in process) and synthetic data generation.

Import `cotune.server_vllm.engine` (`open_engine`, `Sampling`) and `cotune.server_vllm.synthetic`; this package
stays light because the config schema imports its `config` module.
"""

# cotune.config's schema imports this package's config module: loading cotune.config first keeps
# `import cotune.server_vllm.config` from entering that cycle half-way.
import cotune.config  # noqa: F401
