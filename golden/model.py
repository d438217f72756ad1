"""Float models: the layer list, NumPy ``.npz``, scikit-learn and ONNX import, and the float reference.

Activations are laid out channel-last: an image is ``(H, W, C)``, a batch ``(N, H, W, C)``. An FC layer
after a conv flattens its input in ``H, W, C`` order. Convolutions use "same" zero padding
(``k // 2``) and a stride of 1 or 2.

Layer kinds: ``fc`` and ``conv`` carry weights; ``maxpool`` and ``avgpool`` (2x2 windows, stride 2,
output ``(H // 2, W // 2, C)``), ``gap`` (global average pool, output ``(1, 1, C)``) and ``add`` (residual
add: the layer's input plus an earlier activation) have none. Activation ``j`` is the model input for
``j = 0`` and the output of layer ``j - 1`` otherwise, so layer ``i`` reads activation ``i``; an ``add``
layer's ``source`` names the other activation, ``0 <= source <= i``, of the same shape. Any layer may end
in a ReLU. The compiler (and so the accelerator) takes only ``fc`` and ``conv`` so far.

``.npz`` key layout (all arrays; ``i`` counts layers from 0 without gaps)::

    input_shape        int, (K,) for a vector input or (H, W, C) for an image
    layer{i}.kind      str, one of LAYER_KINDS
    layer{i}.weight    float, fc: (M, K) ; conv: (M, C // groups, k, k) with odd k ; fc and conv only
    layer{i}.bias      float, (M,) ; fc and conv only
    layer{i}.relu      int 0/1: ReLU after the layer
    layer{i}.stride    int, conv only, 1 or 2 (default 1)
    layer{i}.groups    int, conv only, 1 or C for depthwise (default 1)
    layer{i}.source    int, add only: the activation added to the layer's input
"""
from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat
from numpy.lib.stride_tricks import sliding_window_view

from .errors import SdhwError

LAYER_KINDS = ("fc", "conv", "maxpool", "avgpool", "gap", "add")
WEIGHTED_KINDS = ("fc", "conv")
_LAYER_KEYS = {"fc": {"kind", "weight", "bias", "relu"},
               "conv": {"kind", "weight", "bias", "relu", "stride", "groups"},
               "maxpool": {"kind", "relu"}, "avgpool": {"kind", "relu"}, "gap": {"kind", "relu"},
               "add": {"kind", "relu", "source"}}
_OPTIONAL_KEYS = {"stride", "groups"}


def _empty() -> np.ndarray:
    return np.zeros(0)


@dataclass
class Layer:
    """One float layer (see the module docstring for the kinds), with an optional fused ReLU.

    Layers without weights keep empty ``weight`` and ``bias`` arrays.
    """

    kind: str
    weight: np.ndarray = field(default_factory=_empty)
    bias: np.ndarray = field(default_factory=_empty)
    relu: bool = False
    stride: int = 1
    groups: int = 1
    source: int | None = None           # add only: index of the activation added to the input

    @property
    def out_channels(self) -> int:
        """Output channels of an fc or conv layer."""
        return self.weight.shape[0]

    @property
    def kernel(self) -> int:
        return self.weight.shape[2] if self.kind == "conv" else 1

    @property
    def sd_capable(self) -> bool:
        """Whether SD decomposes this layer (FC, conv 3x3 and conv 1x1, not depthwise)."""
        return self.kind == "fc" or (self.kind == "conv" and self.groups == 1 and self.kernel in (1, 3))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.kind == "fc":
            return (self.out_channels,)
        if self.kind == "add":
            return tuple(in_shape)
        if self.kind in ("maxpool", "avgpool"):
            h, w, c = in_shape
            return (h // 2, w // 2, c)
        if self.kind == "gap":
            return (1, 1, in_shape[2])
        h, w, _ = in_shape
        pad = self.kernel // 2
        return ((h + 2 * pad - self.kernel) // self.stride + 1,
                (w + 2 * pad - self.kernel) // self.stride + 1, self.out_channels)

    def describe(self) -> str:
        if self.kind == "fc":
            return f"fc {self.weight.shape[1]}->{self.out_channels}"
        if self.kind in ("maxpool", "avgpool"):
            return f"{self.kind}2x2/s2"
        if self.kind == "gap":
            return "global avgpool"
        if self.kind == "add":
            return f"add activation {self.source}"
        dw = " dw" if self.groups > 1 else ""
        return f"conv{self.kernel}x{self.kernel}{dw}/s{self.stride} ->{self.out_channels}"


@dataclass
class Model:
    """A float network: input shape and layers, validated on construction."""

    input_shape: tuple[int, ...]
    layers: list[Layer] = field(default_factory=list)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        validate_model(self)

    def shapes(self) -> list[tuple[int, ...]]:
        """Input shape of every layer followed by the output shape."""
        out = [self.input_shape]
        for layer in self.layers:
            out.append(layer.output_shape(out[-1]))
        return out

    @property
    def n_weights(self) -> int:
        return sum(layer.weight.size for layer in self.layers)


def validate_model(model: Model) -> None:
    """Check shapes, kinds and values; raise :class:`SdhwError` naming the first problem."""
    shape = model.input_shape
    if len(shape) not in (1, 3) or min(shape, default=0) < 1:
        raise SdhwError(f"input_shape must be (K,) or (H, W, C) with positive sizes, not {shape}")
    if not model.layers:
        raise SdhwError("model has no layers")
    shapes = [shape]
    for i, layer in enumerate(model.layers):
        where = f"layer{i}"
        if layer.kind not in LAYER_KINDS:
            raise SdhwError(f"{where}.kind is {layer.kind!r}; valid kinds: {', '.join(LAYER_KINDS)}")
        if layer.kind not in WEIGHTED_KINDS:
            _validate_plain_layer(layer, where, i, shapes)
            shape = layer.output_shape(shape)
            shapes.append(shape)
            if min(shape) < 1:
                raise SdhwError(f"{where} produces an empty output {shape}")
            continue
        if layer.source is not None:
            raise SdhwError(f"{where} is {layer.kind} but has a source; only add has one")
        w, b = np.asarray(layer.weight), np.asarray(layer.bias)
        for name, arr in (("weight", w), ("bias", b)):
            if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
                raise SdhwError(f"{where}.{name} must be real numbers, not {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise SdhwError(f"{where}.{name} contains NaN or Inf")
        if layer.kind == "fc":
            k = math.prod(shape)
            if w.ndim != 2 or w.shape[1] != k:
                raise SdhwError(f"{where}.weight has shape {w.shape}; expected (M, {k}) for an input of {shape}")
        else:
            if len(shape) != 3:
                raise SdhwError(f"{where} is a conv but its input {shape} is not an (H, W, C) image")
            c = shape[2]
            if layer.groups not in (1, c) or (layer.groups == c > 1 and w.shape[0] != c):
                raise SdhwError(f"{where}.groups is {layer.groups}; valid: 1, or {c} (depthwise, M = C)")
            cg = c // layer.groups
            if w.ndim != 4 or w.shape[1] != cg or w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
                raise SdhwError(f"{where}.weight has shape {w.shape}; expected (M, {cg}, k, k) with odd k")
            if layer.stride not in (1, 2):
                raise SdhwError(f"{where}.stride is {layer.stride}; valid: 1, 2")
        if b.shape != (w.shape[0],):
            raise SdhwError(f"{where}.bias has shape {b.shape}; expected ({w.shape[0]},)")
        layer.weight = w.astype(np.float64)
        layer.bias = b.astype(np.float64)
        shape = layer.output_shape(shape)
        shapes.append(shape)
        if min(shape) < 1:
            raise SdhwError(f"{where} produces an empty output {shape}")


def _validate_plain_layer(layer: Layer, where: str, i: int, shapes: list[tuple[int, ...]]) -> None:
    """Checks of a layer without weights; ``shapes`` holds the activations up to the layer's input."""
    if np.asarray(layer.weight).size or np.asarray(layer.bias).size:
        raise SdhwError(f"{where} is {layer.kind}, which has no weight or bias")
    if layer.stride != 1 or layer.groups != 1:
        raise SdhwError(f"{where} is {layer.kind} but has a stride or groups; only conv has those")
    shape = shapes[-1]
    if layer.kind == "add":
        src = layer.source
        if not (isinstance(src, (int, np.integer)) and 0 <= src <= i):
            raise SdhwError(f"{where}.source is {src!r}; valid: an activation index 0..{i} (0 = the model input)")
        if shapes[src] != shape:
            raise SdhwError(f"{where} adds activation {src} of shape {shapes[src]} to its input of shape {shape}")
        layer.source = int(src)
    elif layer.source is not None:
        raise SdhwError(f"{where} is {layer.kind} but has a source; only add has one")
    elif len(shape) != 3:
        raise SdhwError(f"{where} is {layer.kind} but its input {shape} is not an (H, W, C) image")
    layer.weight, layer.bias = _empty(), _empty()


# ------------------------------------------------------------------------------------------ loading
def _scalar(data, key: str, cast):
    arr = data[key]
    if arr.shape not in ((), (1,)):
        raise SdhwError(f"{key} must be a scalar, not an array of shape {arr.shape}")
    try:
        return cast(arr.reshape(()).item())
    except (TypeError, ValueError) as exc:
        raise SdhwError(f"{key} has an invalid value: {exc}") from None


#: arrays of a model .npz, together, at most this many bytes: a compressed archive can declare far more than it
#: stores, and the accelerators this project builds hold models of kilobytes
MAX_NPZ_BYTES = 1 << 30


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _read_npy(f, name: str, stored: int, budget: int) -> np.ndarray:
    """One ``.npy`` member of ``stored`` bytes: its header must declare exactly the bytes that follow it."""
    version = npformat.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise SdhwError(f"array {name!r} has .npy format version {version}; valid: 1.0, 2.0")
    read_header = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
    try:
        shape, fortran, dtype = read_header(f)
    except (ValueError, TypeError, SyntaxError, tokenize.TokenError, RecursionError, MemoryError) as exc:
        raise SdhwError(f"array {name!r} has an unreadable .npy header: {_one_line(exc)}") from None
    if dtype.hasobject:
        raise SdhwError(f"array {name!r} holds Python objects; a model holds only numbers and strings")
    size = math.prod(shape) * dtype.itemsize
    if size != stored - f.tell():
        raise SdhwError(f"array {name!r} declares shape {shape} of {dtype} ({size} bytes) but stores "
                        f"{stored - f.tell()} bytes")
    if size > budget:
        raise SdhwError(f"the file's arrays exceed {MAX_NPZ_BYTES} bytes ({name!r} alone is {size}); "
                        "valid: smaller files")
    data = f.read(size)
    if len(data) != size:
        raise SdhwError(f"array {name!r} is truncated: {len(data)} of {size} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` archive, each ``.npy`` header checked against its size before it is read."""
    arrays = {}
    budget = MAX_NPZ_BYTES
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise SdhwError(f"member {info.filename!r} is not an array (.npy); a model .npz holds only arrays")
            with archive.open(info) as f:
                array = _read_npy(f, info.filename[:-4], info.file_size, budget)
            budget -= array.nbytes
            arrays[info.filename[:-4]] = array
    return arrays


def load_npz(path) -> Model:
    """Load a model from the ``.npz`` key layout in the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise SdhwError(f"model file {str(path)!r} does not exist")
    try:
        arrays = _read_npz(path)
    except SdhwError as exc:
        raise SdhwError(f"cannot read {str(path)!r} as a .npz model: {exc}") from None
    except (OSError, ValueError, TypeError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zlib.error, MemoryError, RecursionError) as exc:
        raise SdhwError(f"cannot read {str(path)!r} as a .npz model (a NumPy archive of arrays, see the key "
                        f"layout): {_one_line(exc)}") from None
    return model_from_arrays(arrays)


def model_from_arrays(arrays: dict[str, np.ndarray]) -> Model:
    if "input_shape" not in arrays:
        raise SdhwError("model is missing the array 'input_shape'")
    shape = np.asarray(arrays["input_shape"])
    if shape.ndim > 1 or not np.issubdtype(shape.dtype, np.integer):
        raise SdhwError(f"input_shape is a {shape.dtype} array of shape {shape.shape}; valid: integers, (K,) or "
                        "(H, W, C)")
    input_shape = tuple(int(s) for s in shape.reshape(-1))
    used = {"input_shape"}
    layers = []
    i = 0
    while f"layer{i}.kind" in arrays:
        kind = _scalar(arrays, f"layer{i}.kind", str)
        if kind not in LAYER_KINDS:
            raise SdhwError(f"layer{i}.kind is {kind!r}; valid kinds: {', '.join(LAYER_KINDS)}")
        for key in sorted(_LAYER_KEYS[kind] - _OPTIONAL_KEYS):
            if f"layer{i}.{key}" not in arrays:
                raise SdhwError(f"model is missing the array 'layer{i}.{key}'")
        opt = {k: _scalar(arrays, f"layer{i}.{k}", int) for k in sorted(_OPTIONAL_KEYS)
               if f"layer{i}.{k}" in arrays}
        if kind != "conv" and opt:
            raise SdhwError(f"layer{i} is {kind} but has {', '.join(f'layer{i}.{k}' for k in opt)}; "
                            "only conv has those")
        relu = bool(_scalar(arrays, f"layer{i}.relu", int))
        if kind in WEIGHTED_KINDS:
            layers.append(Layer(kind, np.asarray(arrays[f"layer{i}.weight"]), np.asarray(arrays[f"layer{i}.bias"]),
                                relu, **opt))
        else:
            source = _scalar(arrays, f"layer{i}.source", int) if kind == "add" else None
            layers.append(Layer(kind, relu=relu, source=source))
        used |= {f"layer{i}.{k}" for k in _LAYER_KEYS[kind]}
        i += 1
    extra = sorted(set(arrays) - used)
    if extra:
        raise SdhwError(f"model has unexpected array(s) {', '.join(map(repr, extra))}; see the .npz key layout")
    return Model(input_shape, layers)


def save_npz(model: Model, path) -> None:
    arrays = {"input_shape": np.asarray(model.input_shape, dtype=np.int64)}
    for i, layer in enumerate(model.layers):
        arrays[f"layer{i}.kind"] = np.asarray(layer.kind)
        arrays[f"layer{i}.relu"] = np.asarray(int(layer.relu))
        if layer.kind == "add":
            arrays[f"layer{i}.source"] = np.asarray(layer.source)
        if layer.kind not in WEIGHTED_KINDS:
            continue
        arrays[f"layer{i}.weight"] = layer.weight.astype(np.float32)
        arrays[f"layer{i}.bias"] = layer.bias.astype(np.float32)
        if layer.kind == "conv":
            arrays[f"layer{i}.stride"] = np.asarray(layer.stride)
            arrays[f"layer{i}.groups"] = np.asarray(layer.groups)
    np.savez_compressed(path, **arrays)


def _sklearn_array(value, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise SdhwError(f"the scikit-learn MLP's {what} is not an array: {_one_line(exc)}") from None
    return arr


def from_sklearn(mlp) -> Model:
    """Import a fitted scikit-learn ``MLPClassifier``/``MLPRegressor`` (ReLU or identity hidden layers)."""
    coefs = getattr(mlp, "coefs_", None)
    if coefs is None:
        raise SdhwError("the scikit-learn object is not a fitted MLP (it has no coefs_)")
    intercepts = getattr(mlp, "intercepts_", None)
    if not (isinstance(coefs, (list, tuple)) and isinstance(intercepts, (list, tuple))
            and len(coefs) == len(intercepts) >= 1):
        raise SdhwError("the scikit-learn MLP's coefs_ and intercepts_ are not lists of one weight matrix and one "
                        f"bias vector per layer ({type(coefs).__name__} and {type(intercepts).__name__}); "
                        "valid: a fitted MLPClassifier or MLPRegressor")
    act = getattr(mlp, "activation", "relu")
    if not isinstance(act, str) or act not in ("relu", "identity"):
        shown = repr(act) if isinstance(act, str) else f"of type {type(act).__name__}"
        raise SdhwError(f"MLP activation {shown} is not supported; valid: 'relu', 'identity'")
    layers = []
    for n, (w, b) in enumerate(zip(coefs, intercepts)):
        w = _sklearn_array(w, f"coefs_[{n}]")
        if w.ndim != 2:
            raise SdhwError(f"the scikit-learn MLP's coefs_[{n}] has shape {w.shape}; valid: a 2-D (inputs, "
                            "outputs) matrix")
        hidden = n < len(coefs) - 1
        layers.append(Layer("fc", w.T, _sklearn_array(b, f"intercepts_[{n}]"), relu=hidden and act == "relu"))
    return Model((layers[0].weight.shape[1],), layers)


def from_torch(module, example_input) -> Model:
    """Import a PyTorch module run on ``example_input`` through ONNX (see :mod:`golden.torch_import`)."""
    from .torch_import import from_torch as _from_torch
    return _from_torch(module, example_input)


TORCH_SUFFIXES = (".pt", ".pt2", ".pth")
CHANNELS_FIRST_SUFFIXES = (".onnx", *TORCH_SUFFIXES)


def load_model(path) -> Model:
    """Load a ``.npz`` model, an ONNX graph (``.onnx``), a ``torch.export`` program (``.pt``/``.pt2``/``.pth``)
    or a pickled/joblib scikit-learn MLP (``.joblib``/``.pkl``)."""
    path = Path(path)
    if path.suffix in TORCH_SUFFIXES:
        from .torch_import import load_torch
        return load_torch(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise SdhwError(f"model file {str(path)!r} does not exist")
        from .onnx_import import from_onnx
        return from_onnx(path)
    if path.suffix in (".joblib", ".pkl", ".pickle"):
        if not path.is_file():
            raise SdhwError(f"model file {str(path)!r} does not exist")
        try:
            import joblib
            unpickle = joblib.load
        except ImportError:
            import pickle

            def unpickle(p):
                with open(p, "rb") as f:
                    return pickle.load(f)
        try:
            obj = unpickle(path)
        except Exception as exc:                       # noqa: BLE001 - any unpickling failure is a bad file
            raise SdhwError(f"cannot read {str(path)!r} as a scikit-learn model: {_one_line(exc)}") from None
        return from_sklearn(obj)
    if path.suffix != ".npz":
        raise SdhwError(f"model file {str(path)!r} has an unknown type; valid: .npz, .onnx, .pt2/.pt/.pth "
                        "(torch.export), .joblib, .pkl")
    return load_npz(path)


# --------------------------------------------------------------------------------- the user's data
def channels_first(path, model: Model) -> bool:
    """Whether the model file lays an input image out ``(C, H, W)`` (ONNX, PyTorch), unlike the model."""
    return Path(path).suffix in CHANNELS_FIRST_SUFFIXES and len(model.input_shape) == 3


def file_input_shape(model: Model, channels_first: bool) -> tuple[int, ...]:
    """The shape of one input in the model file's own layout."""
    if channels_first:
        h, w, c = model.input_shape
        return (c, h, w)
    return model.input_shape


def load_npy_array(path, what: str) -> np.ndarray:
    """The array of the ``.npy`` file ``path``, its header checked against the bytes stored before anything is
    read (no pickles: object arrays are refused); ``what`` names the file in the one-line errors."""
    where = f"{what} {str(path)!r}"
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            if magic.startswith(b"PK"):
                raise SdhwError(f"{where} must be a .npy array, not a .npz archive")
            if magic != b"\x93NUMPY":
                raise SdhwError(f"cannot read {where}: not a .npy array (it does not start with \\x93NUMPY)")
            f.seek(0)
            return _read_npy(f, what, os.fstat(f.fileno()).st_size, MAX_NPZ_BYTES)
    except SdhwError as exc:
        if str(exc).startswith((where, f"cannot read {where}")):
            raise
        raise SdhwError(f"cannot read {where}: {exc}") from None
    except (OSError, ValueError, TypeError, EOFError, MemoryError, RecursionError) as exc:
        raise SdhwError(f"cannot read {where}: {_one_line(exc)}") from None


def load_npz_arrays(path, what: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of the ``.npz`` file ``path``; ``what`` names the file in the one-line errors. Each
    ``.npy`` header is checked against the bytes stored before anything is read (no pickles: object arrays
    are refused)."""
    needs = " and ".join(repr(k) for k in keys)
    where = f"{what} file {str(path)!r}"
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise SdhwError(f"{where} is not a .npz archive (arrays {needs})")
        arrays = {}
        budget = MAX_NPZ_BYTES
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            for key in keys:
                info = members.get(f"{key}.npy")
                if info is None:
                    raise SdhwError(f"{where} has no array {key!r}; it needs {needs}")
                with archive.open(info) as f:
                    arrays[key] = _read_npy(f, key, info.file_size, budget)
                budget -= arrays[key].nbytes
        return arrays
    except SdhwError as exc:
        if str(exc).startswith(where):
            raise
        raise SdhwError(f"cannot read {where}: {exc}") from None
    except (OSError, ValueError, TypeError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zlib.error, MemoryError, RecursionError) as exc:
        raise SdhwError(f"cannot read {where}: {_one_line(exc)}") from None


def load_eval_data(path, model: Model, channels_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labelled inputs from a ``.npz`` with arrays ``x`` and ``y``, as ``(x, y)`` ready for the model.

    ``x`` is ``(N, *shape)`` of any real dtype, inputs in the model file's own layout: ``shape`` is
    ``(C, H, W)`` with ``channels_first`` (an ONNX or PyTorch CNN, see :func:`channels_first`), else the
    model's ``input_shape``; image batches are returned channel-last. ``y`` is ``(N,)`` integer labels,
    each a valid output index of the model.
    """
    layout_shape = file_input_shape(model, channels_first)
    arrays = load_npz_arrays(path, "evaluation", ("x", "y"))
    x, y = arrays["x"], arrays["y"]
    where = f"evaluation file {str(path)!r}"
    expect = "(N, " + ", ".join(map(str, layout_shape)) + ")"
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise SdhwError(f"{where}: array 'x' must be numeric, not {x.dtype}")
    if x.ndim != 1 + len(layout_shape) or tuple(x.shape[1:]) != layout_shape or len(x) == 0:
        raise SdhwError(f"{where}: array 'x' has shape {x.shape}; expected {expect} with N >= 1, inputs in the "
                        "model's own layout")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise SdhwError(f"{where}: array 'x' contains NaN or Inf")
    if not np.issubdtype(y.dtype, np.integer):
        raise SdhwError(f"{where}: array 'y' must hold integer labels, not {y.dtype}")
    if y.shape != (len(x),):
        raise SdhwError(f"{where}: array 'y' has shape {y.shape}; expected ({len(x)},), one label per input")
    classes = math.prod(model.shapes()[-1])
    bad = (y < 0) | (y >= classes)
    if bad.any():
        raise SdhwError(f"{where}: label {int(y[bad][0])} in array 'y' is out of range; valid: 0..{classes - 1} "
                        f"(the model has {classes} outputs)")
    if channels_first:
        x = x.transpose(0, 2, 3, 1)
    return x.reshape((-1, *model.input_shape)), y.astype(np.int64)


def load_calibration_data(path, model: Model, channels_first: bool = False) -> np.ndarray:
    """Calibration inputs from array ``x`` of a ``.npz``, as ``(N, *model.input_shape)`` float64 with N >= 1.

    ``x`` holds real numbers in the model's layout (any shape whose size is a whole number of inputs) or, with
    ``channels_first`` (see :func:`channels_first`), an ``(N, C, H, W)`` batch.
    """
    x = load_npz_arrays(path, "calibration", ("x",))["x"]
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise SdhwError(f"calibration file {str(path)!r}: array 'x' must be real numbers, not {x.dtype}")
    x = x.astype(np.float64)
    if channels_first and x.ndim == 4 and x.shape[1:] == (model.input_shape[2], *model.input_shape[:2]):
        x = x.transpose(0, 2, 3, 1)
    if x.size == 0 or x.size % math.prod(model.input_shape):
        raise SdhwError(f"calibration array 'x' of shape {x.shape} does not hold inputs of shape {model.input_shape}; "
                        "valid: one or more inputs")
    if not np.all(np.isfinite(x)):
        raise SdhwError(f"calibration file {str(path)!r}: array 'x' contains NaN or Inf; valid: finite numbers")
    return x.reshape((-1, *model.input_shape))


# ----------------------------------------------------------------------------------- the float reference
def conv_patches(x: np.ndarray, kernel: int, stride: int, pad_value) -> np.ndarray:
    """Patches ``(N, Ho, Wo, C, k, k)`` of channel-last ``x`` with "same" padding by ``pad_value``."""
    pad = kernel // 2
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
    win = sliding_window_view(x, (kernel, kernel), axis=(1, 2))       # (N, H', W', C, k, k)
    return win[:, ::stride, ::stride]


def layer_matmul(layer_kind: str, x: np.ndarray, weight: np.ndarray, stride: int, groups: int, pad_value):
    """``sum(x * w)`` of an FC or conv layer without bias (exact in the input's dtype)."""
    if layer_kind == "fc":
        return x.reshape(x.shape[0], -1) @ weight.T
    k = weight.shape[2]
    patches = conv_patches(x, k, stride, pad_value)
    if groups == 1:
        n, ho, wo = patches.shape[:3]
        flat = patches.reshape(n * ho * wo, -1) @ weight.reshape(weight.shape[0], -1).T
        return flat.reshape(n, ho, wo, -1)
    return np.einsum("nhwcij,cij->nhwc", patches, weight[:, 0])


def pool_windows(x: np.ndarray) -> np.ndarray:
    """The 2x2 stride-2 windows ``(N, H // 2, W // 2, C, 4)`` of a channel-last batch (odd edges dropped)."""
    n, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    win = x[:, :2 * ho, :2 * wo].reshape(n, ho, 2, wo, 2, c)
    return win.transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, 4)


def forward_float(model: Model, x: np.ndarray, *, trace: bool = False):
    """Float reference inference of a batch ``(N, *input_shape)``; with ``trace`` also each layer's output.

    Pooling layers take the maximum or the mean of each window, ``gap`` the mean over ``H, W``, ``add``
    the sum of its input and activation ``source``.
    """
    x = np.asarray(x, dtype=np.float64).reshape((-1, *model.input_shape))
    acts = [x]
    for layer in model.layers:
        if layer.kind in WEIGHTED_KINDS:
            x = layer_matmul(layer.kind, x, layer.weight, layer.stride, layer.groups, 0.0) + layer.bias
        elif layer.kind == "maxpool":
            x = pool_windows(x).max(axis=-1)
        elif layer.kind == "avgpool":
            x = pool_windows(x).mean(axis=-1)
        elif layer.kind == "gap":
            x = x.mean(axis=(1, 2), keepdims=True)
        else:
            x = x + acts[layer.source]
        if layer.relu:
            x = np.maximum(x, 0.0)
        acts.append(x)
    return (x, acts[1:]) if trace else x


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))


def n_macs(model: Model) -> int:
    """Multiply-accumulates of one inference."""
    total = 0
    shapes = model.shapes()
    for layer, out in zip(model.layers, shapes[1:]):
        if layer.kind in WEIGHTED_KINDS:
            total += math.prod(out) * (layer.weight[0].size)
    return total
