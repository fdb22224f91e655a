"""Runtime: CPU-first generation over torch, onnxruntime and llama.cpp, with chat sessions.

`import runtime` is light; each backend imports its library when it is loaded.
Example: `balabol chat --format gguf-q4_k_m`.
"""

from runtime.base import Backend, GenerationConfig
from runtime.loader import load

__all__ = ["Backend", "GenerationConfig", "load"]
