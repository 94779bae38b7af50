"""A BERT encoder as an ONNX model, written from its float32 weights, for onnxruntime.

No exporter is needed (and none installs offline without PyTorch): an ONNX model is a
protobuf message, and the few fields used here are written directly in protobuf's wire
format. The graph uses onnxruntime's fused transformer operators (domain ``com.microsoft``,
the ones its own BERT optimiser produces), so each layer is four matrix products and four
fused kernels::

    input_ids, attention_mask
      └─ EmbedLayerNormalization      word + position (+ token type 0) embeddings, LayerNorm;
           │                          also the count of real tokens per row (the mask index)
           └─ 6 × [ Attention          Q, K and V in one product, 12 heads, padding masked
                    MatMul → SkipLayerNormalization    output projection, + residual, LayerNorm
                    MatMul → BiasGelu                  feed-forward in (exact GELU)
                    MatMul → SkipLayerNormalization ]  feed-forward out, + residual, LayerNorm
                      └─ last_hidden_state

The weights stay float32, so the model computes what the original does (see
``tests/test_reference_vectors.py``). The mask index assumes right padding, which is what
the local embedder sends.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from parley_embeddings.weights import Weights

MICROSOFT = "com.microsoft"
OPSET = 17
IR_VERSION = 8

# TensorProto.DataType values.
FLOAT = 1
INT32 = 6
INT64 = 7
_DTYPES = {np.dtype("float32"): FLOAT, np.dtype("int32"): INT32, np.dtype("int64"): INT64}


# Protobuf wire format: a field is a varint key (number << 3 | wire type) and its value. A
# message is kept as a list of parts, so the weights are copied once, into the final bytes.
Parts = list[bytes | memoryview]


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _message_field(number: int, parts: Parts) -> Parts:
    size = sum(part.nbytes if isinstance(part, memoryview) else len(part) for part in parts)
    return [_varint(number << 3 | 2) + _varint(size), *parts]


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _str_field(number: int, value: str) -> bytes:
    return _bytes_field(number, value.encode())


def _float_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _tensor(name: str, array: npt.NDArray[np.generic]) -> Parts:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9)."""
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    head = b"".join(_int_field(1, d) for d in data.shape)
    head += _int_field(2, _DTYPES[array.dtype]) + _str_field(8, name)
    return [head, *_message_field(9, [memoryview(data.data).cast("B")])]


def _attribute(name: str, value: int | float) -> bytes:
    """AttributeProto: name (1), type (20: 1 float, 2 int), f (2) or i (3)."""
    if isinstance(value, float):
        return _str_field(1, name) + _int_field(20, 1) + _float_field(2, value)
    return _str_field(1, name) + _int_field(20, 2) + _int_field(3, value)


def _value_info(name: str, elem_type: int, dims: Iterable[int | str]) -> bytes:
    """ValueInfoProto: name (1), type (2) → TypeProto.tensor_type (1) → elem_type, shape."""
    shape = b"".join(
        _bytes_field(1, _int_field(1, d) if isinstance(d, int) else _str_field(2, d)) for d in dims
    )
    tensor_type = _int_field(1, elem_type) + _bytes_field(2, shape)
    return _str_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))


class _Graph:
    """Nodes and initialisers, in the order they are added."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: Parts = []

    def constant(self, name: str, array: npt.NDArray[np.generic]) -> str:
        self.initializers += _message_field(5, _tensor(name, array))
        return name

    def node(
        self,
        op_type: str,
        inputs: list[str],
        output: str,
        *,
        outputs: list[str] | None = None,
        domain: str = "",
        **attributes: int | float,
    ) -> str:
        """NodeProto: input (1), output (2), name (3), op_type (4), attribute (5), domain (7).
        An empty input name leaves an optional input out."""
        message = b"".join(_str_field(1, i) for i in inputs)
        message += b"".join(_str_field(2, o) for o in [output, *(outputs or [])])
        message += _str_field(3, f"{op_type}_{len(self.nodes)}") + _str_field(4, op_type)
        message += b"".join(_bytes_field(5, _attribute(k, v)) for k, v in attributes.items())
        if domain:
            message += _str_field(7, domain)
        self.nodes.append(message)
        return output


def bert_encoder(weights: Weights, *, heads: int, layer_norm_eps: float) -> bytes:
    """The serialised ONNX model of a BERT encoder (Hugging Face names, ``embeddings.*`` and
    ``encoder.layer.N.*``): inputs ``input_ids`` and ``attention_mask`` (int64, batch ×
    sequence, right-padded), output ``last_hidden_state`` (float32, batch × sequence × hidden).
    """
    w = weights
    g = _Graph()
    eps = float(layer_norm_eps)
    hidden = w["embeddings.word_embeddings.weight"].shape[1]

    ids = g.node("Cast", ["input_ids"], "input_ids_int32", to=INT32)
    mask = g.node("Cast", ["attention_mask"], "attention_mask_int32", to=INT32)
    # Every token has type 0: its embedding is folded into the position embeddings.
    token_type = w["embeddings.token_type_embeddings.weight"][0]
    positions = w["embeddings.position_embeddings.weight"] + token_type
    x = g.node(
        "EmbedLayerNormalization",
        [
            ids,
            "",
            g.constant("word_embeddings", w["embeddings.word_embeddings.weight"]),
            g.constant("position_embeddings", positions.astype(np.float32)),
            "",
            g.constant("embeddings_ln_gamma", w["embeddings.LayerNorm.weight"]),
            g.constant("embeddings_ln_beta", w["embeddings.LayerNorm.bias"]),
            mask,
        ],
        "embeddings",
        outputs=["mask_index"],
        domain=MICROSOFT,
        epsilon=eps,
    )

    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in w:
        p = f"encoder.layer.{layer}"

        def const(name: str, key: str, *, transpose: bool = False, p: str = p) -> str:
            array = w[f"{p}.{key}"]
            return g.constant(f"{p}.{name}", np.ascontiguousarray(array.T if transpose else array))

        qkv = ("query", "key", "value")
        qkv_weight = np.concatenate([w[f"{p}.attention.self.{n}.weight"].T for n in qkv], axis=1)
        qkv_bias = np.concatenate([w[f"{p}.attention.self.{n}.bias"] for n in qkv])
        attention = g.node(
            "Attention",
            [
                x,
                g.constant(f"{p}.qkv_weight", qkv_weight),
                g.constant(f"{p}.qkv_bias", qkv_bias),
                "mask_index",
            ],
            f"{p}.attention",
            domain=MICROSOFT,
            num_heads=heads,
        )
        projected = g.node(
            "MatMul",
            [attention, const("out_weight", "attention.output.dense.weight", transpose=True)],
            f"{p}.attention_projected",
        )
        x = g.node(
            "SkipLayerNormalization",
            [
                projected,
                x,
                const("attention_ln_gamma", "attention.output.LayerNorm.weight"),
                const("attention_ln_beta", "attention.output.LayerNorm.bias"),
                const("out_bias", "attention.output.dense.bias"),
            ],
            f"{p}.attention_output",
            domain=MICROSOFT,
            epsilon=eps,
        )
        inner = g.node(
            "MatMul",
            [x, const("ffn_in_weight", "intermediate.dense.weight", transpose=True)],
            f"{p}.ffn_in",
        )
        activated = g.node(
            "BiasGelu",
            [inner, const("ffn_in_bias", "intermediate.dense.bias")],
            f"{p}.ffn_gelu",
            domain=MICROSOFT,
        )
        outer = g.node(
            "MatMul",
            [activated, const("ffn_out_weight", "output.dense.weight", transpose=True)],
            f"{p}.ffn_out",
        )
        x = g.node(
            "SkipLayerNormalization",
            [
                outer,
                x,
                const("ffn_ln_gamma", "output.LayerNorm.weight"),
                const("ffn_ln_beta", "output.LayerNorm.bias"),
                const("ffn_out_bias", "output.dense.bias"),
            ],
            f"{p}.output",
            domain=MICROSOFT,
            epsilon=eps,
        )
        layer += 1
    if layer == 0:
        raise ValueError("no encoder layers in the weights (expected encoder.layer.0.*)")
    g.node("Identity", [x], "last_hidden_state")

    # GraphProto: node (1), name (2), initializer (5), input (11), output (12).
    graph: Parts = [_bytes_field(1, n) for n in g.nodes]
    graph.append(_str_field(2, "bert_encoder"))
    graph += g.initializers
    for name in ("input_ids", "attention_mask"):
        graph.append(_bytes_field(11, _value_info(name, INT64, ["batch", "sequence"])))
    output = _value_info("last_hidden_state", FLOAT, ["batch", "sequence", hidden])
    graph.append(_bytes_field(12, output))
    # ModelProto: ir_version (1), producer_name (2), graph (7), opset_import (8).
    model: Parts = [_int_field(1, IR_VERSION), _str_field(2, "parley"), *_message_field(7, graph)]
    model.append(_bytes_field(8, _str_field(1, "") + _int_field(2, OPSET)))
    model.append(_bytes_field(8, _str_field(1, MICROSOFT) + _int_field(2, 1)))
    return b"".join(model)
