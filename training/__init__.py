"""The training stage: data importers and cleaning (`training/data/`), LoRA/QLoRA fine-tuning
(`lora.py`) and evaluation (`evaluate.py`). Depends only on `balabol/`.

Example: `balabol train --base default --data data/me --name me`
"""
