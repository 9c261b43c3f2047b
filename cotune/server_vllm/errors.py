"""Errors of the generation engines; each message names the cause and, for vLLM, where its log is."""


class EngineError(RuntimeError):
    """The engine cannot serve: it failed to start, died, or rejected a request. No silent fallback follows."""


class AdapterError(ValueError):
    """An adapter folder is missing, unloadable, built for another base model, or too large for the engine."""


class PromptTooLongError(ValueError):
    """A prompt plus its new tokens does not fit the engine's context (ServerConfig.max_model_len)."""
