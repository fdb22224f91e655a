"""Export: merge an adapter, write ONNX fp32/int8 and GGUF f16/q8_0/q4_k_m/q4_0, check each
against torch, write manifest.json. Entry point: `balabol export` (export/pipeline.py)."""
