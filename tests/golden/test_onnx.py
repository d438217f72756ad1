"""golden.onnx_import: graphs built with onnx.helper, imported and run by the float reference against
onnxruntime; the layout conversion, folding, every supported op, the one-line errors, and the compiler on an
imported model."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the ONNX import needs the onnx package (pip install 'sdhw[onnx]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from golden import SdhwError  # noqa: E402
from golden.compiler import CompileOptions, compile_model  # noqa: E402
from golden.format import pack, unpack  # noqa: E402
from golden.model import forward_float, load_model  # noqa: E402
from golden.onnx_import import SUPPORTED_OPS, from_onnx, to_channel_last  # noqa: E402
from golden.program import infer  # noqa: E402

OPSET = 17


# --------------------------------------------------------------------------------------------- builders
class Graph:
    """A small ONNX graph under construction: nodes, initializers from a seeded generator, one input."""

    def __init__(self, seed: int, in_shape, in_name: str = "x"):
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.in_shape = list(in_shape)
        self.nodes, self.inits = [], []
        self.last = in_name
        self.count = 0

    def const(self, arr, name: str | None = None) -> str:
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def const_int(self, values) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def rand(self, *shape, scale: float = 0.4) -> str:
        return self.const(self.rng.normal(0, scale, shape))

    def op(self, op_type: str, inputs=None, outputs: int = 1, **attrs) -> str:
        self.count += 1
        inputs = [self.last] if inputs is None else inputs
        outs = [f"t{self.count}"] + [f"t{self.count}_{k}" for k in range(1, outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type.lower()}{self.count}", **attrs))
        self.last = outs[0]
        return outs[0]

    def conv(self, m: int, c: int, k: int, stride: int = 1, bias: bool = True, group: int = 1, **attrs) -> str:
        ins = [self.last, self.rand(m, c // group, k, k)] + ([self.rand(m, scale=0.1)] if bias else [])
        if "auto_pad" not in attrs:
            attrs.setdefault("pads", [k // 2] * 4)
        return self.op("Conv", ins, strides=[stride, stride], group=group, **attrs)

    def bn(self, m: int) -> str:
        r = self.rng
        return self.op("BatchNormalization", [self.last, self.const(r.uniform(0.5, 1.5, m)),
                                              self.const(r.normal(0, 0.2, m)), self.const(r.normal(0, 0.2, m)),
                                              self.const(r.uniform(0.5, 2.0, m))], epsilon=1e-3)

    def gemm(self, m: int, k: int, **attrs) -> str:
        trans = attrs.get("transB", 0)
        w = self.rand(m, k) if trans else self.rand(k, m, scale=0.4)
        return self.op("Gemm", [self.last, w, self.rand(m, scale=0.1)], **attrs)

    def model(self, out_shape=None, batch="N"):
        in_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch] + self.in_shape)
        out_info = helper.make_tensor_value_info(self.last, TensorProto.FLOAT, out_shape)
        graph = helper.make_graph(self.nodes, f"g{self.seed}", [in_info], [out_info], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)

    def input(self, n: int = 4) -> np.ndarray:
        return self.rng.normal(0, 1, (n, *self.in_shape)).astype(np.float32)


def run_onnxruntime(proto, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime", reason="the float reference of imported graphs is onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_matches_onnxruntime(proto, x: np.ndarray, msg: str = ""):
    """The imported model's float inference equals onnxruntime's outputs (channel-last) to float32 precision."""
    onnx.checker.check_model(proto)
    model = from_onnx(proto)
    want = to_channel_last(run_onnxruntime(proto, x))
    got = forward_float(model, to_channel_last(x))
    assert got.shape == want.shape, msg
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()), err_msg=msg)
    return model


# ----------------------------------------------------------------------------------------- the models
def mlp(seed: int = 1, batch="N") -> Graph:
    """MatMul+Add, Gemm (transB, alpha, beta), BN on a vector, Relu, Clip as ReLU, Dropout, Identity."""
    g = Graph(seed, [20])
    g.op("MatMul", [g.last, g.rand(20, 16)])
    g.op("Add", [g.const(g.rng.normal(0, 0.1, (1, 16))), g.last])       # the bias first: order is free
    g.bn(16)
    g.op("Relu")
    g.op("Dropout", [g.last, g.const(0.5)])
    g.gemm(12, 16, transB=1, alpha=0.7, beta=1.3)
    g.op("Clip", [g.last, g.const(0.0)])
    g.op("Identity")
    g.gemm(5, 12)
    return g


def small_cnn(seed: int = 2, flatten: str = "Flatten", batch="N") -> Graph:
    """conv3x3/s1 + BN + ReLU, conv3x3/s2 (bias as an Add), conv1x1/s2, flatten, Gemm: all the accelerator runs."""
    g = Graph(seed, [3, 7, 6])
    g.conv(4, 3, 3, bias=False)
    g.bn(4)
    g.op("Relu")
    g.conv(6, 4, 3, stride=2, bias=False)
    g.op("Add", [g.last, g.const(g.rng.normal(0, 0.1, (1, 6, 1, 1)))])
    g.op("Relu")
    g.conv(5, 6, 1, stride=2, auto_pad="SAME_UPPER")
    g.op("Relu")
    k = 5 * 2 * 2
    if flatten == "Flatten":
        g.op("Flatten", axis=1)
    else:
        shape = {"Reshape-1": [-1, k], "Reshape0": [0, -1]}[flatten]
        g.op("Reshape", [g.last, g.const_int(shape)])
    g.gemm(4, k)
    return g


def pooled_resnet(seed: int = 3) -> Graph:
    """Max pool, a residual block (identity shortcut), depthwise conv, average pool, GAP, Constant, Reshape."""
    g = Graph(seed, [4, 8, 8])
    g.conv(6, 4, 3)
    g.op("Relu")
    pooled = g.op("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    g.conv(6, 6, 3)
    g.op("Relu")
    g.conv(6, 6, 3)
    g.op("Add", [pooled, g.last])
    g.op("Relu")
    g.conv(6, 6, 3, group=6)
    g.op("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
    gap = g.op("GlobalAveragePool")
    shape = g.op("Constant", [], value=numpy_helper.from_array(np.array([-1, 6], dtype=np.int64)))
    g.op("Reshape", [gap, shape])
    g.gemm(3, 6, transB=1)
    return g


# ------------------------------------------------------------------------------------- against onnxruntime
@pytest.mark.parametrize("batch", ["N", 4])
def test_mlp_matches_onnxruntime(batch):
    g = mlp(batch=batch)
    model = assert_matches_onnxruntime(g.model([batch, 5], batch=batch), g.input(4), f"seed {g.seed}")
    assert model.input_shape == (20,)
    assert [(layer.kind, layer.weight.shape, layer.relu) for layer in model.layers] == [
        ("fc", (16, 20), True), ("fc", (12, 16), True), ("fc", (5, 12), False)]


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape-1", "Reshape0"])
def test_cnn_matches_onnxruntime(flatten):
    g = small_cnn(flatten=flatten)
    model = assert_matches_onnxruntime(g.model(["N", 4]), g.input(5), f"seed {g.seed}, {flatten}")
    assert model.input_shape == (7, 6, 3)
    assert [layer.describe() for layer in model.layers] == ["conv3x3/s1 ->4", "conv3x3/s2 ->6", "conv1x1/s2 ->5",
                                                            "fc 20->4"]
    assert [layer.relu for layer in model.layers] == [True, True, True, False]
    assert model.shapes()[-2] == (2, 2, 5)


def test_pooling_residual_depthwise_match_onnxruntime():
    g = pooled_resnet()
    model = assert_matches_onnxruntime(g.model(["N", 3]), g.input(3), f"seed {g.seed}")
    kinds = [layer.kind for layer in model.layers]
    assert kinds == ["conv", "maxpool", "conv", "conv", "add", "conv", "avgpool", "gap", "fc"]
    add = model.layers[4]
    assert add.source == 2 and add.relu, "the shortcut is the max pool's output (activation 2)"
    assert model.layers[5].groups == 6


def test_the_models_cover_every_supported_op():
    ops = {node.op_type for g in (mlp(), small_cnn(), small_cnn(flatten="Reshape0"), pooled_resnet())
           for node in g.nodes}
    assert ops == set(SUPPORTED_OPS), sorted(set(SUPPORTED_OPS) ^ ops)


def test_fc_after_flatten_gets_hwc_columns():
    """The first FC after flattening an NCHW image reads it in the model's H, W, C order."""
    g = Graph(7, [2, 3, 4])
    g.op("Flatten")
    wname = g.rand(24, 5)
    g.op("MatMul", [g.last, wname])
    model = from_onnx(g.model(["N", 5]))
    w_onnx = next(numpy_helper.to_array(t) for t in g.inits if t.name == wname).T     # (5, C*H*W)
    w = model.layers[0].weight
    for c in range(2):
        for h in range(3):
            for x in range(4):
                np.testing.assert_array_equal(w[:, (h * 4 + x) * 2 + c], w_onnx[:, (c * 3 + h) * 4 + x])
    assert_matches_onnxruntime(g.model(["N", 5]), g.input(3))


def test_clip_attribute_form_and_same_padding():
    """Opset 6's Clip (min/max attributes) as a ReLU; auto_pad SAME_UPPER on a stride-2 conv of odd size.

    onnxruntime has no opset-6 Gemm, so the comparison runs the same graph at opset 17 with a Relu.
    """
    g = Graph(8, [2, 5, 5])
    ins = [g.last, g.rand(3, 2, 3, 3), g.rand(3, scale=0.1)]
    g.op("Conv", ins, strides=[2, 2], auto_pad="SAME_UPPER")
    g.op("Clip", min=0.0)
    g.op("Flatten")
    g.gemm(2, 27)
    proto = g.model(["N", 2])
    proto.opset_import[0].version = 6
    model = from_onnx(proto)
    assert model.layers[0].relu and model.layers[0].stride == 2
    proto.opset_import[0].version = OPSET
    proto.graph.node[1].CopyFrom(helper.make_node("Relu", [proto.graph.node[0].output[0]],
                                                  [proto.graph.node[1].output[0]]))
    assert_matches_onnxruntime(proto, g.input(3))


def test_load_model_reads_onnx_files(tmp_path):
    g = mlp()
    path = tmp_path / "m.onnx"
    onnx.save(g.model(["N", 5]), path)
    model = load_model(path)
    assert model.input_shape == (20,) and len(model.layers) == 3
    with pytest.raises(SdhwError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


# ----------------------------------------------------------------------------------------------- errors
def _case(name: str):
    """(ModelProto, words the one-line error must contain) for each refused graph."""
    if name == "unsupported-op":
        g = mlp()
        g.op("Sigmoid")
        return g.model(), ["Sigmoid", "'sigmoid", "supported:", "Conv", "Gemm"]
    if name == "unnamed-node":
        g = mlp()
        g.op("Softmax")
        g.nodes[-1].ClearField("name")
        return g.model(), ["Softmax", f"node #{len(g.nodes) - 1}", "supported:"]
    if name == "custom-domain":
        g = mlp()
        g.nodes.append(helper.make_node("Gelu", [g.last], ["y"], name="act", domain="com.microsoft"))
        g.last = "y"
        return g.model(), ["com.microsoft.Gelu", "'act'", "supported:"]
    if name == "missing-initializer":
        g = small_cnn()
        g.inits = [t for t in g.inits if t.name != g.nodes[0].input[1]]
        return g.model(), ["Conv node 'conv", "weight", "missing"]
    if name == "missing-activation":
        g = mlp()
        g.nodes[0].input[0] = "nowhere"
        return g.model(), ["'nowhere'", "neither an initializer nor the output", "MatMul"]
    if name == "unknown-dim":
        g = small_cnn()
        proto = g.model()
        proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
        return proto, ["unknown dimension 2", "'height'", "batch"]
    if name == "relu6":
        g = mlp()
        g.op("Clip", [g.last, g.const(0.0), g.const(6.0)])
        return g.model(), ["Clip", "ReLU6", "supported:"]
    if name == "clip-other":
        g = mlp()
        g.op("Clip", [g.last, g.const(-1.0), g.const(1.0)])
        return g.model(), ["Clip(-1, 1)", "supported:"]
    if name == "group":
        g = Graph(9, [4, 5, 5])
        g.conv(4, 4, 3, group=2)
        return g.model(), ["group 2", "depthwise"]
    if name == "asymmetric-pads":
        g = Graph(9, [2, 6, 6])
        g.op("Conv", [g.last, g.rand(3, 2, 3, 3)], strides=[2, 2], auto_pad="SAME_UPPER")
        return g.model(), ["pads [0, 0, 1, 1]", "supported: 1 on every side"]
    if name == "stride":
        g = Graph(9, [2, 6, 6])
        g.conv(3, 2, 3, stride=3)
        return g.model(), ["strides [3, 3]", "supported"]
    if name == "even-kernel":
        g = Graph(9, [2, 6, 6])
        g.conv(3, 2, 2, pads=[1, 1, 1, 1])
        return g.model(), ["kernel 2x2", "odd"]
    if name == "pool-3x3":
        g = Graph(9, [2, 6, 6])
        g.op("MaxPool", kernel_shape=[3, 3], strides=[2, 2])
        return g.model(), ["MaxPool", "2x2 window"]
    if name == "bn-after-relu":
        g = Graph(9, [2, 6, 6])
        g.conv(3, 2, 3)
        g.op("Relu")
        g.bn(3)
        return g.model(), ["BatchNormalization", "after a ReLU", "cannot be folded"]
    if name == "not-a-chain":
        g = Graph(9, [2, 6, 6])
        g.conv(3, 2, 3)
        first = g.last
        g.conv(3, 3, 3)
        g.last = first
        g.conv(3, 3, 1)                                      # a second branch from the first conv
        return g.model(), ["not a chain", "layer 0"]
    if name == "pre-relu-reuse":
        g = Graph(9, [2, 6, 6])
        pre = g.conv(2, 2, 3)
        g.op("Relu")
        g.op("Add", [g.last, pre])
        return g.model(), ["Add", "after Relu node", "folded"]
    if name == "reshape-other":
        g = Graph(9, [2, 6, 6])
        g.op("Reshape", [g.last, g.const_int([-1, 2, 36])])
        return g.model(), ["Reshape", "[-1, 2, 36]", "flatten"]
    if name == "two-inputs":
        g = mlp()
        proto = g.model()
        proto.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 3]))
        return proto, ["exactly one data input", "'extra'"]
    if name == "rank-3-input":
        g = Graph(9, [3, 5])
        g.op("Relu")
        return g.model(), ["rank 3", "(batch, C, H, W)"]
    if name == "unknown-attribute":
        g = Graph(9, [2, 6, 6])
        g.conv(3, 2, 3, kernel_shape=[3, 3])
        g.nodes[-1].attribute.append(helper.make_attribute("foo", 1))
        return g.model(), ["attribute 'foo'", "supported:"]
    if name == "gemm-on-image":
        g = Graph(9, [2, 6, 6])
        g.op("Gemm", [g.last, g.rand(72, 3)])
        return g.model(), ["Gemm", "Flatten"]
    if name == "relu-on-input":
        g = Graph(9, [5])
        g.op("Relu")
        return g.model(), ["Relu", "model input"]
    raise AssertionError(name)


ERROR_CASES = ["unsupported-op", "unnamed-node", "custom-domain", "missing-initializer", "missing-activation",
               "unknown-dim", "relu6", "clip-other", "group", "asymmetric-pads", "stride", "even-kernel", "pool-3x3",
               "bn-after-relu", "not-a-chain", "pre-relu-reuse", "reshape-other", "two-inputs", "rank-3-input",
               "unknown-attribute", "gemm-on-image", "relu-on-input"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_refused_graphs_give_one_line_errors(case):
    proto, words = _case(case)
    with pytest.raises(SdhwError) as info:
        from_onnx(proto)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for word in words:
        assert word.lower() in msg.lower(), f"{word!r} not in {msg!r}"


@pytest.mark.parametrize("case", ["garbage", "truncated", "empty"])
def test_corrupt_files(tmp_path, case):
    path = tmp_path / "bad.onnx"
    data = mlp().model().SerializeToString()
    path.write_bytes({"garbage": b"\xff\xfe not a protobuf \x00\x01", "truncated": data[: len(data) // 2],
                      "empty": b""}[case])
    with pytest.raises(SdhwError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and "cannot read" in msg and "bad.onnx" in msg, msg


def test_from_onnx_rejects_other_objects():
    with pytest.raises(SdhwError, match="file path or an onnx.ModelProto"):
        from_onnx(b"bytes")


# -------------------------------------------------------------------------------------------- the compiler
def test_imported_cnn_compiles_to_a_program():
    """An imported CNN goes through the compiler: the integer program tracks onnxruntime's outputs.

    Int8 dense stays within a few percent; SD on this tiny random network (no pruning, 3 exponent bits,
    2 fine-tuning epochs) within half the output range, as the method's error, not the import's, dominates.
    """
    g = small_cnn(seed=11)
    proto = g.model(["N", 4])
    model = from_onnx(proto)
    x = g.rng.normal(0, 1, (64, 3, 7, 6)).astype(np.float32)
    want = run_onnxruntime(proto, x)
    for opts in (CompileOptions(method="paper", dense=True), CompileOptions(epochs=2, prune=0.0, exp_bits=3)):
        program = compile_model(model, to_channel_last(x), opts).program
        assert [layer.kind for layer in program.layers] == ["conv", "conv", "conv", "fc"]
        assert [layer.is_sd for layer in program.layers] == [not opts.dense] * 4
        assert unpack(pack(program)).input_shape == (7, 6, 3)
        got = infer(program, to_channel_last(x))
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < (0.05 if opts.dense else 0.5), f"seed {g.seed}, dense {opts.dense}: relative error {err:.3f}"


def test_compiler_refuses_layers_the_accelerator_does_not_run():
    model = from_onnx(pooled_resnet().model())
    with pytest.raises(SdhwError) as info:
        compile_model(model, np.zeros((2, 8, 8, 4)))
    msg = str(info.value)
    assert msg.startswith("layer 1 (maxpool2x2/s2): the accelerator does not run maxpool layers yet"), msg
