"""Llama attention as one onnxruntime GroupQueryAttention node per layer.

optimum's graph spends ~60 nodes per layer on attention: shape arithmetic for the reshapes,
the GQA head repeat (Expand), the causal mask and a NaN guard around the softmax. Each
node costs a kernel launch per decode step, so on SmolLM2-135M (30 layers) they take more
time than the int8 matrix products. GroupQueryAttention does the rotary embedding, the
KV-cache concat and causal attention in one CPU kernel, reading the same inputs
(attention_mask, past_key_values.N.*) and writing the same outputs (present.N.*), so the
file still loads in optimum's ORTModelForCausalLM.

Its positions come from the cache length (past + offset in the prompt), as the runtime,
parity gate and optimum feed them: one sequence, no padding. `position_ids` stays a graph
input, unused.

Example: export/onnx.py calls `to_gqa(model, config)` after onnxruntime's RoPE fusion.
"""

from __future__ import annotations

import re

import numpy as np

O_PROJ = re.compile(r"/model/layers\.(\d+)/self_attn/o_proj/MatMul$")


def prune(graph) -> None:
    """Drop the nodes no graph output depends on, then initializers nothing reads."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
            for attr in node.attribute:  # subgraphs read outer names too
                if attr.HasField("g"):
                    needed.update(x for n in attr.g.node for x in n.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def to_gqa(model, config: dict) -> int:
    """Rewrite `model` (a fused llama graph) in place; how many layers were rewritten."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inputs = {i.name for i in graph.input}
    rotary = [n for n in graph.node if n.op_type == "RotaryEmbedding"]
    by_name = {n.name: n for n in graph.node}
    layers = sorted(int(m[1]) for n in graph.node if (m := O_PROJ.match(n.name)))
    if not rotary or not layers or "attention_mask" not in inputs:
        return 0
    if any(helper.get_attribute_value(a) for n in rotary for a in n.attribute):
        return 0  # interleaved or partial rotary: not what llama does
    cos, sin = rotary[0].input[2:4]
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)

    # per sequence: (tokens seen so far) - 1, and the total length, from the mask
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "gqa/axis_1"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "gqa/one"),
        ]
    )
    shared = [
        helper.make_node(
            "ReduceSum", ["attention_mask", "gqa/axis_1"], ["gqa/len"], "gqa/len", keepdims=0
        ),
        helper.make_node("Sub", ["gqa/len", "gqa/one"], ["gqa/last"], "gqa/last"),
        helper.make_node(
            "Cast", ["gqa/last"], ["gqa/seqlens_k"], "gqa/seqlens_k", to=TensorProto.INT32
        ),
        helper.make_node("Shape", ["attention_mask"], ["gqa/mask_shape"], "gqa/mask_shape"),
        helper.make_node(
            "Gather", ["gqa/mask_shape", "gqa/one"], ["gqa/total"], "gqa/total", axis=0
        ),
        helper.make_node(
            "Cast", ["gqa/total"], ["gqa/total_i32"], "gqa/total_i32", to=TensorProto.INT32
        ),
    ]
    before: dict[str, object] = {}
    for i in layers:
        p = f"/model/layers.{i}/self_attn/"
        proj = [by_name.get(f"{p}{x}_proj/MatMul") for x in "qkv"]
        if None in proj:
            return 0  # not optimum's llama naming: leave the graph as it is
        out = f"{p}GroupQueryAttention_output_0"
        before[f"{p}o_proj/MatMul"] = helper.make_node(
            "GroupQueryAttention",
            [n.output[0] for n in proj]
            + [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
            + ["gqa/seqlens_k", "gqa/total_i32", cos, sin],
            [out, f"present.{i}.key", f"present.{i}.value"],
            f"{p}GroupQueryAttention",
            domain="com.microsoft",
            num_heads=heads,
            kv_num_heads=kv_heads,
            do_rotary=1,
            rotary_interleaved=0,
        )
        by_name[f"{p}o_proj/MatMul"].input[0] = out
    presents = {f"present.{i}.{kv}" for i in layers for kv in ("key", "value")}
    nodes = list(shared)
    for node in graph.node:
        if node.name in before:
            nodes.append(before[node.name])
        if presents.isdisjoint(node.output):  # optimum's Concat wrote them before
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    prune(graph)
    return len(layers)
