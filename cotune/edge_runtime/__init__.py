"""The device side: run an exported cotune model with onnxruntime(-genai) and numpy only — never torch.

Keep every import here free of torch and of cotune modules that pull it (a test checks this in a subprocess).
"""

from cotune.edge_runtime.classifier import Classification, EdgeClassifier
from cotune.edge_runtime.model import EdgeModel, Generation, TextStream
from cotune.edge_runtime.sampling import GREEDY, Sampling
from cotune.edge_runtime.speed import DecodeSpeed, measure_decode_speed
from cotune.edge_runtime.task import TaskCard, read_task_card

__all__ = [
    "GREEDY", "Classification", "DecodeSpeed", "EdgeClassifier", "EdgeModel", "Generation", "Sampling", "TaskCard",
    "TextStream", "measure_decode_speed", "read_task_card",
]  # fmt: skip
