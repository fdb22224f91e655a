"""Attention for packed rows: every sample in a row attends to itself only, and no compute
goes to the pairs of tokens that belong to different samples.

`dataset.collate_packed` lays a micro-batch's samples end to end in one row and passes
where each starts (`cu_seq_lens_q`, the kwargs transformers' models hand down to their
attention function). transformers' own SDPA path turns packed position_ids into a
block-diagonal mask over the whole row, and torch's CPU kernels with a mask are slow:
for four samples of 60-400 tokens (830 in all), forward + backward of one SmolLM2 layer's
attention took 41 ms masked against 16 ms for a causal SDPA call per sample. This module
registers an attention function that makes those per-sample calls. Batches without
`cu_seq_lens_q` (the padded eval batches, generation) go to the stock SDPA function with
their mask, and the stock SDPA mask is registered under the same name.

Llama and Gemma 3 hand the collator's `cu_seq_lens_q` down to attention; GPT2LMHeadModel
does not (transformers 4.57), so a packed GPT-2 row gets the block-diagonal mask: right,
only not faster.

Example: `_load_model` in training/lora.py loads the base with
`attn_implementation=attention.register()` when training packs its batches.
"""

from __future__ import annotations

import itertools

NAME = "balabol_packed"


def packed_sdpa(module, query, key, value, attention_mask, *, cu_seq_lens_q=None, **kwargs):
    """query (batch, heads, tokens, dim), key and value (batch, kv heads, tokens, dim) ->
    ((batch, tokens, heads, dim), None), like transformers' sdpa_attention_forward. With
    cu_seq_lens_q (the cumulative sample lengths of a packed row, starting at 0), each
    sample gets a causal attention of its own, and a sliding window (Gemma's local layers)
    when the sample is longer than it."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if query.shape[0] != 1 or key.shape[-2] != query.shape[-2]:
        raise ValueError(
            "packed attention takes one row without a cache: query "
            f"{tuple(query.shape)}, key {tuple(key.shape)}"
        )
    kwargs.pop("is_causal", None)  # GPT-2 passes one; every sample here is causal
    window = kwargs.get("sliding_window")
    bounds = cu_seq_lens_q.tolist()
    outputs = []
    for start, end in itertools.pairwise(bounds):
        n = end - start
        mask = None
        if window and n > window:
            at = torch.arange(n, device=query.device)
            offset = at[:, None] - at[None, :]  # query position - key position
            mask = ((offset >= 0) & (offset < window))[None, None]
        out, _ = sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            mask,
            is_causal=mask is None,
            **kwargs,
        )
        outputs.append(out)
    return torch.cat(outputs, dim=1), None


def register() -> str:
    """Register the packed attention (and the stock SDPA mask for unpacked batches) with
    transformers; the name to pass as `attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
