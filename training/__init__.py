"""The training stage: data importers and cleaning (`training/data/`), `balabol train`
(`train.py`: the command; `harness.py`: the sequence every architecture runs; `lora.py`:
LoRA/QLoRA; `baselines/`: models from scratch) and evaluation (`evaluate.py`). Depends only
on `balabol/`.

Example: `balabol train --base default --data data/me --name me`
"""
