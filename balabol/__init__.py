"""Balabol: a small language model and your own text, as an offline Telegram bot.

The shared core: CLI, settings, chat format, artifact manifest, embedded base models and
error types. Nothing here imports torch, onnxruntime or llama_cpp at import time.
"""

__version__ = "0.1.0"
