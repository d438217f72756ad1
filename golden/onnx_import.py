"""ONNX import: an NCHW inference graph -> a channel-last :class:`golden.model.Model`.

Supported ops (default ONNX domain):

- ``Conv``: square odd kernels (1x1, 3x3, ...), stride 1 or 2 on both axes, no dilation, "same" padding
  (``k // 2`` on every side, explicit or through ``auto_pad``), ``group`` 1 or C (depthwise, one filter
  per channel).
- ``Gemm`` (``transA = 0``, any ``alpha``, ``beta``, ``transB``), ``MatMul`` by a constant (K, M) matrix,
  ``Add`` of a constant bias right after either (or after a Conv, one value per channel).
- ``BatchNormalization`` (inference form) right after a Conv, Gemm or MatMul: folded into its weights.
- ``Relu``, and ``Clip`` with min 0 and no max (a ReLU): fused into the layer before. ``Clip(0, 6)``
  (ReLU6) is refused: the model's layers end in a plain ReLU or nothing.
- ``MaxPool`` and ``AveragePool`` with 2x2 windows, stride 2, no padding; ``GlobalAveragePool``.
- ``Add`` of two activations (residual): the previous layer's output plus any earlier activation.
- ``Flatten`` (axis 1) and ``Reshape`` to ``(batch, K)``, before an FC layer.
- ``Identity``, ``Dropout`` (inference: the identity) and ``Constant``.

Layout: an image input ``(N, C, H, W)`` becomes ``input_shape = (H, W, C)``: feed the model
:func:`to_channel_last` of the ONNX input. Conv weights keep ONNX's ``(M, C, kh, kw)`` order, which is the
model's; an FC after a Flatten of an image gets its input columns permuted from ONNX's ``C, H, W`` order to
the model's ``H, W, C``. An image output comes out channel-last as well, and a flattened image output in
``H, W, C`` order.

Graph form: the graph has one data input and one output; its layers form a chain (each reads the previous
layer's output), and a residual Add may also read any earlier activation. The batch dimension (0) of the
input may be symbolic or fixed; every other dimension must be known.

Problems are raised as one-line :class:`golden.SdhwError` naming the node. The ``onnx`` package is needed
only here (``pip install 'sdhw[onnx]'``) and imported when a model is read.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SdhwError
from .model import WEIGHTED_KINDS, Layer, Model

SUPPORTED_OPS = ("Add", "AveragePool", "BatchNormalization", "Clip", "Constant", "Conv", "Dropout", "Flatten",
                 "Gemm", "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Relu", "Reshape")

# attributes each op may carry; any other attribute could change the op's meaning, so it is refused
_KNOWN_ATTRS = {
    "Add": set(), "Relu": set(), "Identity": set(), "MatMul": set(), "GlobalAveragePool": set(),
    "AveragePool": {"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides"},
    "BatchNormalization": {"epsilon", "momentum", "training_mode", "spatial", "is_test"},
    "Clip": {"min", "max"},
    "Constant": {"value", "value_float", "value_floats", "value_int", "value_ints"},
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "Dropout": {"ratio", "seed", "is_test"},
    "Flatten": {"axis"},
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "MaxPool": {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"},
    "Reshape": {"allowzero", "shape"},
}


# the type of every attribute in _KNOWN_ATTRS (onnx.AttributeProto type names); an attribute of another type is refused
_ATTR_TYPES = {
    **dict.fromkeys(("group", "axis", "transA", "transB", "training_mode", "spatial", "is_test", "ceil_mode",
                     "count_include_pad", "storage_order", "allowzero", "seed", "value_int"), "INT"),
    **dict.fromkeys(("kernel_shape", "pads", "strides", "dilations", "shape", "value_ints"), "INTS"),
    **dict.fromkeys(("alpha", "beta", "epsilon", "momentum", "ratio", "min", "max", "value_float"), "FLOAT"),
    "value_floats": "FLOATS", "auto_pad": "STRING", "value": "TENSOR",
}


def to_channel_last(x: np.ndarray) -> np.ndarray:
    """An ONNX-layout batch ``(N, C, H, W)`` as the imported model's input ``(N, H, W, C)``; vectors unchanged."""
    x = np.asarray(x)
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def from_onnx(model) -> Model:
    """Import an ONNX model (a file path or an ``onnx.ModelProto``) as a float :class:`Model`."""
    try:
        import onnx
    except ImportError:
        raise SdhwError("reading ONNX models needs the onnx package: pip install 'sdhw[onnx]'") from None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise SdhwError(f"model file {str(path)!r} does not exist")
        try:
            model = onnx.load_model(path)
        except Exception as exc:                        # noqa: BLE001 - protobuf and external-data errors vary
            raise SdhwError(f"cannot read {str(path)!r} as an ONNX model: {_one_line(exc)}") from None
        if not len(model.graph.node):
            raise SdhwError(f"cannot read {str(path)!r} as an ONNX model: it has no graph nodes")
    elif not isinstance(model, onnx.ModelProto):
        raise SdhwError(f"from_onnx takes a file path or an onnx.ModelProto, not {type(model).__name__}")
    elif not len(model.graph.node):
        raise SdhwError("the ONNX model has no graph nodes")
    return _Importer(model.graph, onnx).run()


def _printable(text: str) -> str:
    """``text`` as it is, or quoted with its control characters escaped (a message stays on one line)."""
    return text if text.isprintable() else repr(text)


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@dataclass(frozen=True)
class _Value:
    """A tensor of the graph: activation ``act`` of the model, or a flattened view of that image."""

    act: int
    flat: bool = False


class _Importer:
    def __init__(self, graph, onnx):
        self.graph = graph
        self.onnx = onnx
        self.inits: dict[str, np.ndarray] = {}
        for t in graph.initializer:
            self.inits[t.name] = self._to_array(t, f"initializer {t.name!r}")
        self.values: dict[str, _Value] = {}
        self.stale: dict[str, str] = {}             # tensor -> the node that folded into its layer after it
        self.layers: list[Layer] = []
        self.shapes: list[tuple[int, ...]] = []     # shapes[j]: model-layout shape of activation j
        self.consumed = Counter(name for node in graph.node for name in node.input if name)
        self.consumed.update(out.name for out in graph.output)

    def _to_array(self, tensor, what: str) -> np.ndarray:
        try:
            return np.asarray(self.onnx.numpy_helper.to_array(tensor))
        except Exception as exc:                        # noqa: BLE001 - unreadable tensor data of any kind
            raise SdhwError(f"cannot read {what} of the ONNX model: {_one_line(exc)}") from None

    # ------------------------------------------------------------------------------------------ driver
    def run(self) -> Model:
        graph = self.graph
        data_inputs = [i for i in graph.input if i.name not in self.inits]
        if len(data_inputs) != 1:
            names = ", ".join(repr(i.name) for i in data_inputs) or "none"
            raise SdhwError(f"the ONNX graph must have exactly one data input (an input without an initializer); "
                            f"it has {len(data_inputs)}: {names}")
        input_shape = self._input_shape(data_inputs[0])
        self.shapes.append(input_shape)
        self.values[data_inputs[0].name] = _Value(0)
        # folding (BatchNorm, alpha, bias adds) may overflow on extreme constants: the Model checks below refuse
        # the non-finite weights that result, with the layer named
        with np.errstate(over="ignore", invalid="ignore"):
            for index, node in enumerate(graph.node):
                self._node(node, index)
        if len(graph.output) != 1:
            raise SdhwError(f"the ONNX graph must have exactly one output; it has {len(graph.output)}")
        name = graph.output[0].name
        out = self._lookup(name, "the graph output")
        if out.act != len(self.layers) or not self.layers:
            raise SdhwError(f"the graph output {name!r} is not the output of the last layer")
        return Model(input_shape, self.layers)

    def _input_shape(self, info) -> tuple[int, ...]:
        name = info.name
        ttype = info.type.tensor_type if info.type.HasField("tensor_type") else None
        if ttype is None or not ttype.HasField("shape"):
            raise SdhwError(f"the ONNX input {name!r} has no tensor shape; the import needs its dimensions")
        dims = []
        for d, dim in enumerate(ttype.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif d == 0:
                dims.append(None)
            else:
                label = f" ({dim.dim_param!r})" if dim.dim_param else ""
                raise SdhwError(f"the ONNX input {name!r} has an unknown dimension {d}{label}; only the batch "
                                "dimension (0) may be symbolic")
        if len(dims) == 2:
            return (dims[1],)
        if len(dims) == 4:
            return (dims[2], dims[3], dims[1])
        raise SdhwError(f"the ONNX input {name!r} has rank {len(dims)}; supported: (batch, K) vectors and "
                        "(batch, C, H, W) images")

    # --------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _where(node, index: int) -> str:
        op = _printable(node.op_type)
        return f"{op} node {node.name!r}" if node.name else f"{op} node #{index}"

    def _attrs(self, node, where: str) -> dict:
        out = {}
        for attr in node.attribute:
            if attr.name not in _KNOWN_ATTRS[node.op_type]:
                raise SdhwError(f"{where}: attribute {attr.name!r} is not supported; supported: "
                                f"{', '.join(sorted(_KNOWN_ATTRS[node.op_type])) or 'none'}")
            kind = self.onnx.AttributeProto.AttributeType.Name(attr.type) \
                if attr.type in self.onnx.AttributeProto.AttributeType.values() else str(attr.type)
            if kind != _ATTR_TYPES[attr.name]:
                raise SdhwError(f"{where}: attribute {attr.name!r} is of type {kind}; valid: {_ATTR_TYPES[attr.name]}")
            value = self.onnx.helper.get_attribute_value(attr)
            if attr.type == self.onnx.AttributeProto.FLOAT and not math.isfinite(value) \
                    and attr.name not in ("min", "max"):
                raise SdhwError(f"{where}: attribute {attr.name!r} is {value}; valid: a finite number")
            if isinstance(value, bytes):
                value = value.decode()
            elif attr.type == self.onnx.AttributeProto.TENSOR:
                value = self._to_array(value, f"attribute {attr.name!r} of {where}")
            out[attr.name] = value
        return out

    def _lookup(self, name: str, who: str) -> _Value:
        if name in self.stale:
            raise SdhwError(f"{who} reads {name!r} after {self.stale[name]} was folded into the layer that "
                            "produces it; such graphs are not supported")
        if name in self.values:
            return self.values[name]
        if name in self.inits:
            raise SdhwError(f"{who} reads the constant {name!r} where an activation is expected; supported: "
                            "constants only as weights, biases and parameters")
        raise SdhwError(f"{who} reads {name!r}, which is neither an initializer nor the output of an earlier "
                        "node (a missing initializer?)")

    def _value(self, node, where: str, k: int = 0) -> _Value:
        if len(node.input) <= k or not node.input[k]:
            raise SdhwError(f"{where}: input {k} is missing")
        return self._lookup(node.input[k], where)

    def _const(self, node, where: str, k: int, what: str, finite: bool = True) -> np.ndarray | None:
        """Input ``k`` as a constant array of real numbers (finite unless told), or None when the optional
        input is absent."""
        if len(node.input) <= k or not node.input[k]:
            return None
        name = node.input[k]
        if name in self.inits:
            value = self.inits[name]
            if value.dtype != bool and (not np.issubdtype(value.dtype, np.number)
                                        or np.issubdtype(value.dtype, np.complexfloating)):
                raise SdhwError(f"{where}: its {what} {name!r} has dtype {value.dtype}; valid: real numbers")
            if finite and np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
                raise SdhwError(f"{where}: its {what} {name!r} holds NaN or Inf; valid: finite numbers")
            return value
        if name in self.values or name in self.stale:
            raise SdhwError(f"{where}: its {what} {name!r} is computed by the graph; supported: a constant "
                            "(initializer)")
        raise SdhwError(f"{where}: its {what} {name!r} is missing: neither an initializer nor the output of "
                        "an earlier node")

    def _latest(self, v: _Value, where: str, name: str) -> None:
        if v.act != len(self.layers):
            src = "the model input" if v.act == 0 else f"the output of layer {v.act - 1}"
            raise SdhwError(f"{where} reads {name!r}, {src}, not the previous layer's output: the graph is not a "
                            "chain of layers (only a residual Add may read an earlier activation)")

    def _image(self, v: _Value, where: str) -> tuple[int, int, int]:
        shape = self.shapes[v.act]
        if len(shape) != 3 or v.flat:
            raise SdhwError(f"{where} needs an (N, C, H, W) image input; its input is a (N, K) vector")
        return shape

    def _onnx_rank(self, v: _Value) -> int:
        return 4 if len(self.shapes[v.act]) == 3 and not v.flat else 2

    def _push(self, node, where: str, layer: Layer, flat: bool = False) -> None:
        shape = layer.output_shape(self.shapes[-1])
        if min(shape) < 1:
            raise SdhwError(f"{where} produces an empty output (model layout {shape})")
        self.layers.append(layer)
        self.shapes.append(shape)
        self.values[node.output[0]] = _Value(len(self.layers), flat)

    def _fold_target(self, where: str, v: _Value, name: str, what: str, weighted: bool = True) -> Layer:
        """The layer producing ``v`` (read as ``name``), which ``what`` is folded into, if that is exact."""
        self._latest(v, where, name)
        if v.act == 0:
            raise SdhwError(f"{where}: {what} on the model input is not supported; supported: {what} after a layer")
        layer = self.layers[v.act - 1]
        if weighted:
            ok = layer.kind in WEIGHTED_KINDS and not v.flat
            if not ok or layer.relu:
                after = "a ReLU" if ok else f"a {layer.kind} layer" + (" and a Flatten" if v.flat else "")
                raise SdhwError(f"{where}: {what} after {after} cannot be folded; supported: {what} directly after "
                                "a Conv, Gemm or MatMul")
        return layer

    def _folded(self, node, where: str, v: _Value) -> None:
        """Every other name of ``v``'s activation now means the value before the fold."""
        for name in [n for n, val in self.values.items() if val.act == v.act]:
            del self.values[name]
            self.stale[name] = where
        self.values[node.output[0]] = v

    def _extra_outputs_unused(self, node, where: str) -> None:
        for name in node.output[1:]:
            if name and self.consumed[name]:
                raise SdhwError(f"{where}: its output {name!r} is used; supported: only the first output")

    def _pads(self, where: str, attrs: dict, kernel: int, stride: int, hw: tuple[int, int]) -> list[int]:
        """Effective ``[top, left, bottom, right]`` padding of a Conv or pool."""
        auto = attrs.get("auto_pad", "NOTSET")
        if auto in ("NOTSET", ""):
            pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
            if len(pads) != 4:
                raise SdhwError(f"{where}: pads {pads} do not have 4 values (2-D)")
            return pads
        if "pads" in attrs:
            raise SdhwError(f"{where}: has both auto_pad {auto!r} and pads; the ONNX standard allows only one")
        if auto == "VALID":
            return [0, 0, 0, 0]
        if auto not in ("SAME_UPPER", "SAME_LOWER"):
            raise SdhwError(f"{where}: auto_pad {auto!r} is not supported; supported: NOTSET, VALID, SAME_UPPER, "
                            "SAME_LOWER")
        begin, end = [], []
        for size in hw:
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin + end

    # ------------------------------------------------------------------------------------------- ops
    def _node(self, node, index: int) -> None:
        where = self._where(node, index)
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            op = _printable(f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type)
            name = repr(node.name) if node.name else f"#{index}"
            raise SdhwError(f"ONNX op {op} (node {name}) is not supported; supported: {', '.join(SUPPORTED_OPS)}")
        if not node.output or not node.output[0]:
            raise SdhwError(f"{where}: has no output")
        attrs = self._attrs(node, where)
        getattr(self, f"_op_{node.op_type}")(node, where, attrs)

    def _op_Constant(self, node, where, attrs):
        if len(attrs) != 1:
            raise SdhwError(f"{where}: needs exactly one value attribute")
        self.inits[node.output[0]] = np.asarray(next(iter(attrs.values())))

    def _op_Identity(self, node, where, attrs):
        name = node.input[0] if node.input else ""
        if name in self.inits:
            self.inits[node.output[0]] = self.inits[name]
        else:
            self.values[node.output[0]] = self._value(node, where)

    def _op_Dropout(self, node, where, attrs):
        self._extra_outputs_unused(node, where)
        training = self._const(node, where, 2, "training_mode")
        if training is not None and bool(self._scalar(training, where, "training_mode")):
            raise SdhwError(f"{where}: training_mode is true; supported: inference (training_mode false)")
        self._op_Identity(node, where, attrs)

    def _op_Conv(self, node, where, attrs):
        v = self._value(node, where)
        self._latest(v, where, node.input[0])
        h, w, c = self._image(v, where)
        weight = self._const(node, where, 1, "weight")
        if weight is None or weight.ndim != 4:
            raise SdhwError(f"{where}: the weight must be a 4-D (M, C, kh, kw) constant")
        m, cg, kh, kw = weight.shape
        bias = self._const(node, where, 2, "bias")
        bias = np.zeros(m) if bias is None else bias.reshape(-1)
        if bias.shape != (m,):
            raise SdhwError(f"{where}: the bias has {bias.size} values for {m} output channels")
        kshape = [int(k) for k in attrs.get("kernel_shape", [kh, kw])]
        if kshape != [kh, kw] or kh != kw or kh % 2 == 0:
            raise SdhwError(f"{where}: kernel {kshape[0]}x{kshape[-1]} is not supported; supported: square odd "
                            "kernels (1x1, 3x3, ...) matching the weight")
        group = int(attrs.get("group", 1))
        if group == 1 and cg != c:
            raise SdhwError(f"{where}: the weight takes {cg} input channels; the input has {c}")
        if group != 1 and not (group == c and cg == 1 and m == c):
            raise SdhwError(f"{where}: group {group} is not supported; supported: 1, or {c} (depthwise with one "
                            "filter per channel)")
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        if len(set(strides)) != 1 or strides[0] not in (1, 2):
            raise SdhwError(f"{where}: strides {strides} are not supported; supported: [1, 1], [2, 2]")
        if any(int(d) != 1 for d in attrs.get("dilations", [1, 1])):
            raise SdhwError(f"{where}: dilations {list(attrs['dilations'])} are not supported; supported: [1, 1]")
        pads = self._pads(where, attrs, kh, strides[0], (h, w))
        if pads != [kh // 2] * 4:
            raise SdhwError(f"{where}: pads {pads} are not supported; supported: {kh // 2} on every side "
                            f"(\"same\" padding of a {kh}x{kh} kernel)")
        self._push(node, where, Layer("conv", weight.astype(np.float64), bias.astype(np.float64), stride=strides[0],
                                      groups=group))

    def _fc(self, node, where: str, weight: np.ndarray, bias: np.ndarray) -> None:
        """An FC layer of ``(M, K)`` ONNX weights on input 0, columns reordered after a Flatten of an image."""
        v = self._value(node, where)
        self._latest(v, where, node.input[0])
        shape = self.shapes[v.act]
        if len(shape) == 3 and not v.flat:
            raise SdhwError(f"{where}: its input is an (N, C, H, W) image; supported: a Flatten or Reshape to "
                            "(N, K) first")
        k = math.prod(shape)
        if weight.shape[1] != k:
            raise SdhwError(f"{where}: the weight takes {weight.shape[1]} inputs; the input has {k}")
        if len(shape) == 3:
            h, w, c = shape
            weight = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(-1, k)
        self._push(node, where, Layer("fc", weight.astype(np.float64), bias.astype(np.float64)))

    def _op_Gemm(self, node, where, attrs):
        if int(attrs.get("transA", 0)):
            raise SdhwError(f"{where}: transA = 1 is not supported; supported: transA = 0 (activations as rows)")
        b = self._const(node, where, 1, "weight")
        if b is None or b.ndim != 2:
            raise SdhwError(f"{where}: the weight must be a 2-D constant")
        weight = float(attrs.get("alpha", 1.0)) * (b if int(attrs.get("transB", 0)) else b.T)
        m = weight.shape[0]
        c = self._const(node, where, 2, "bias")
        bias = np.zeros(m) if c is None else self._broadcast_bias(c, m, 2, where)
        self._fc(node, where, weight, float(attrs.get("beta", 1.0)) * bias)

    def _op_MatMul(self, node, where, attrs):
        b = self._const(node, where, 1, "weight")
        if b is None or b.ndim != 2:
            raise SdhwError(f"{where}: the weight (second input) must be a 2-D constant")
        self._fc(node, where, b.T, np.zeros(b.shape[1]))

    @staticmethod
    def _broadcast_bias(t: np.ndarray, m: int, rank: int, where: str) -> np.ndarray:
        """A constant added to a rank-``rank`` tensor of ``m`` channels (axis 1) as ``m`` per-channel values."""
        shape = (1,) * (rank - t.ndim) + tuple(t.shape)
        if t.ndim > rank or any(s != 1 for i, s in enumerate(shape) if i != 1) or shape[1] not in (1, m):
            raise SdhwError(f"{where}: a constant of shape {tuple(t.shape)} is not one value per channel "
                            f"({m} channels)")
        return np.broadcast_to(t.reshape(-1).astype(np.float64), (m,)).copy()

    def _op_Add(self, node, where, attrs):
        names = list(node.input)
        if len(names) != 2:
            raise SdhwError(f"{where}: has {len(names)} inputs; an Add has 2")
        consts = [n in self.inits for n in names]
        if all(consts):
            raise SdhwError(f"{where}: adds two constants; supported: a bias after a layer, or a residual add")
        if any(consts):
            k = consts.index(False)
            v = self._value(node, where, k)
            layer = self._fold_target(where, v, names[k], "a bias Add")
            m = layer.out_channels
            bias = self._const(node, where, consts.index(True), "bias")
            layer.bias = layer.bias + self._broadcast_bias(bias, m, self._onnx_rank(v), where)
            self._folded(node, where, v)
            return
        a, b = self._value(node, where, 0), self._value(node, where, 1)
        if b.act == len(self.layers):
            a, b = b, a
            names.reverse()
        self._latest(a, where, names[0])
        if self.shapes[a.act] != self.shapes[b.act] or a.flat != b.flat:
            raise SdhwError(f"{where}: adds tensors of different shapes {self.shapes[a.act]} and "
                            f"{self.shapes[b.act]} (model layout); supported: a residual add of equal shapes")
        self._push(node, where, Layer("add", source=b.act), a.flat)

    @staticmethod
    def _scalar(value, where: str, what: str) -> float:
        arr = np.asarray(value)
        if arr.size != 1:
            raise SdhwError(f"{where}: its {what} has {arr.size} values; valid: a single value")
        return float(arr.reshape(()))

    def _relu(self, node, where):
        v = self._value(node, where)
        layer = self._fold_target(where, v, node.input[0], "a ReLU", weighted=False)
        layer.relu = True
        self._folded(node, where, v)

    def _op_Relu(self, node, where, attrs):
        self._relu(node, where)

    def _op_Clip(self, node, where, attrs):
        lo = attrs.get("min", self._const(node, where, 1, "min", finite=False))
        hi = attrs.get("max", self._const(node, where, 2, "max", finite=False))
        lo = -math.inf if lo is None else self._scalar(lo, where, "min")
        hi = math.inf if hi is None else self._scalar(hi, where, "max")
        if lo == 0 and hi == math.inf:
            self._relu(node, where)
            return
        if lo == 0 and hi == 6:
            raise SdhwError(f"{where}: Clip(0, 6) (ReLU6) cannot be expressed: layers end in a plain ReLU; "
                            "supported: Clip(0, no max), a ReLU")
        raise SdhwError(f"{where}: Clip({lo:g}, {hi:g}) is not supported; supported: Clip(0, no max), a ReLU")

    def _op_BatchNormalization(self, node, where, attrs):
        if int(attrs.get("training_mode", 0)) or not int(attrs.get("spatial", 1)):
            raise SdhwError(f"{where}: only the inference form (training_mode 0, spatial 1) is supported")
        self._extra_outputs_unused(node, where)
        v = self._value(node, where)
        layer = self._fold_target(where, v, node.input[0], "BatchNormalization")
        m = layer.out_channels
        params = []
        for k, what in enumerate(("scale", "bias", "mean", "variance"), start=1):
            p = self._const(node, where, k, what)
            if p is None or p.size != m:
                raise SdhwError(f"{where}: its {what} must be a constant of {m} values (one per channel)")
            params.append(p.reshape(-1).astype(np.float64))
        scale, shift, mean, var = params
        var = var + float(attrs.get("epsilon", 1e-5))
        if not np.all(var > 0):
            raise SdhwError(f"{where}: variance + epsilon is not positive for every channel; valid: a positive "
                            "variance")
        a = scale / np.sqrt(var)
        layer.weight = layer.weight * a.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
        layer.bias = (layer.bias - mean) * a + shift
        self._folded(node, where, v)

    def _pool(self, node, where, attrs, kind: str):
        self._extra_outputs_unused(node, where)
        v = self._value(node, where)
        self._latest(v, where, node.input[0])
        h, w, _ = self._image(v, where)
        if [int(k) for k in attrs.get("kernel_shape", [])] != [2, 2] \
                or [int(s) for s in attrs.get("strides", [1, 1])] != [2, 2] \
                or any(int(d) != 1 for d in attrs.get("dilations", [1, 1])):
            raise SdhwError(f"{where}: kernel_shape {list(attrs.get('kernel_shape', []))}, strides "
                            f"{list(attrs.get('strides', [1, 1]))} are not supported; supported: a 2x2 window, "
                            "stride 2, no dilation")
        if self._pads(where, attrs, 2, 2, (h, w)) != [0, 0, 0, 0]:
            raise SdhwError(f"{where}: padding is not supported; supported: no padding")
        if int(attrs.get("ceil_mode", 0)) and (h % 2 or w % 2):
            raise SdhwError(f"{where}: ceil_mode 1 on an odd-sized {h}x{w} input is not supported; supported: "
                            "ceil_mode 0")
        self._push(node, where, Layer(kind))

    def _op_MaxPool(self, node, where, attrs):
        self._pool(node, where, attrs, "maxpool")

    def _op_AveragePool(self, node, where, attrs):
        self._pool(node, where, attrs, "avgpool")

    def _op_GlobalAveragePool(self, node, where, attrs):
        v = self._value(node, where)
        self._latest(v, where, node.input[0])
        self._image(v, where)
        self._push(node, where, Layer("gap"))

    def _flatten_view(self, node, v: _Value) -> None:
        self.values[node.output[0]] = _Value(v.act, len(self.shapes[v.act]) == 3)

    def _op_Flatten(self, node, where, attrs):
        v = self._value(node, where)
        rank = self._onnx_rank(v)
        axis = int(attrs.get("axis", 1))
        if axis not in (1, 1 - rank):
            raise SdhwError(f"{where}: axis {axis} is not supported; supported: 1 (flatten all but the batch)")
        self._flatten_view(node, v)

    def _op_Reshape(self, node, where, attrs):
        v = self._value(node, where)
        target = attrs["shape"] if "shape" in attrs else self._const(node, where, 1, "shape")
        if target is None:
            raise SdhwError(f"{where}: the target shape is missing")
        target = [int(t) for t in np.asarray(target).reshape(-1)]
        k = math.prod(self.shapes[v.act])
        zero_copies = not int(attrs.get("allowzero", 0))
        ok = len(target) == 2 and target[1] in (-1, k) and target != [-1, -1] \
            and (target[0] == -1 or target[0] > 0 or (target[0] == 0 and zero_copies))
        if not ok:
            raise SdhwError(f"{where}: a reshape to {target} is not supported; supported: a flatten to (batch, {k})"
                            f" such as [-1, {k}] or [0, -1]")
        self._flatten_view(node, v)
