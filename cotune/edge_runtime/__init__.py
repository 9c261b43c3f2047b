"""The device side: run an exported cotune model with onnxruntime(-genai) and numpy only — never torch.

Keep every import here free of torch and of cotune modules that pull it (a test checks this in a subprocess).
"""

from cotune.edge_runtime.model import EdgeModel, Generation, TextStream
from cotune.edge_runtime.sampling import GREEDY, Sampling
from cotune.edge_runtime.speed import measure_tokens_per_s

__all__ = ["GREEDY", "EdgeModel", "Generation", "Sampling", "TextStream", "measure_tokens_per_s"]
