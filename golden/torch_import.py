"""PyTorch import: a module (or a saved ``torch.export`` program) through ONNX into :mod:`golden.onnx_import`.

:func:`from_torch` exports with ``torch.onnx.export`` (PyTorch's ``torch.export``-based exporter, which
needs ``onnxscript``) at the example input's shape, in inference mode, and imports the ONNX graph: the
supported layers, the NCHW -> channel-last conversion and the errors are those of the ONNX import.

Files (:func:`load_torch`, ``sdhw compile model.pt2``): a program saved by ``torch.export.save``, read
with ``torch.export.load``. It holds the graph, the weights and the example input's shape. ``torch.export.load``
itself unpickles some members and loads compiled AOTInductor libraries, so archives holding pickled Python
constants or compiled code are refused and every ``torch.load`` it makes is kept to tensors
(``TORCH_FORCE_WEIGHTS_ONLY_LOAD``): reading a file runs no code from it. Pickled modules
(``torch.save(module)``) are refused: unpickling them can run arbitrary code. TorchScript is deprecated by
PyTorch in favour of ``torch.export``. Save a model with::

    torch.export.save(torch.export.export(module.eval(), (example_input,)), "model.pt2")

``torch`` is an optional extra (``pip install 'sdhw[torch]'``), imported only here and only when called.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import SdhwError
from .model import Model

SAVE_HINT = "save it with torch.export.save(torch.export.export(model.eval(), (example_input,)), 'model.pt2')"


def _torch():
    try:
        import torch
    except ImportError:
        raise SdhwError("PyTorch models need torch: pip install 'sdhw[torch]' (or export ONNX and give the "
                        ".onnx file)") from None
    return torch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip() if text and text[0].strip() else type(exc).__name__


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's own warnings and log lines: they concern torch's internals, not the model."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


#: members torch.export.load would run as code: compiled AOTInductor / ExecuTorch / MTIA models
COMPILED_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")


def _refuse_code(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse archives with members that ``torch.export.load`` loads as code: compiled models, and constants
    other than tensors (it unpickles those with ``pickle.loads``)."""
    for info in archive.infolist():
        name = info.filename.split("/", 1)[-1]            # below the archive's root folder
        if name.startswith(COMPILED_DIRS):
            raise SdhwError(f"{str(path)!r} holds compiled code ({info.filename}), which is not loaded; valid: a "
                            f"program saved with torch.export.save only ({SAVE_HINT})")
        if name.startswith("data/constants/") and name.endswith("_config.json"):
            try:
                entries = json.loads(archive.read(info))["config"].values()
                objects = [e["path_name"] for e in entries if not str(e["path_name"]).startswith("tensor_")]
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError, zipfile.BadZipFile, OSError,
                    EOFError, NotImplementedError, zlib.error) as exc:
                raise SdhwError(f"cannot read {str(path)!r}: its constants table {info.filename} is not valid "
                                f"({_first_line(exc)}); {SAVE_HINT}") from None
            if objects:
                raise SdhwError(f"{str(path)!r} holds pickled Python constants ({objects[0]}), which are not "
                                "loaded since that can run code from the file; valid: tensor constants only")


@contextlib.contextmanager
def _tensors_only():
    """Every ``torch.load`` inside unpickles tensors only, whatever ``weights_only`` its caller passes."""
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def _to_onnx(torch, exportable, args: tuple | None):
    try:
        import onnxscript  # noqa: F401 - torch's exporter needs it; a clear message beats its ImportError
    except ImportError:
        raise SdhwError("exporting PyTorch models needs onnxscript: pip install 'sdhw[torch]'") from None
    with _quiet_exporter():
        try:
            program = torch.onnx.export(exportable, args, dynamo=True, verbose=False, optimize=True)
        except Exception as exc:                        # noqa: BLE001 - the exporter raises many kinds
            cause = exc.__cause__ or exc
            raise SdhwError(f"cannot export the PyTorch model to ONNX: {_first_line(cause)}") from None
    return program.model_proto


def from_torch(module, example_input) -> Model:
    """Import a ``torch.nn.Module`` (or a ``torch.export.ExportedProgram``) run on ``example_input``.

    ``example_input`` is one input batch in the module's own layout (a tensor or a NumPy array, e.g.
    ``(1, C, H, W)``); only its shape and dtype matter. A module is exported in ``eval()`` mode and left in
    the mode it was in.
    """
    torch = _torch()
    from .onnx_import import from_onnx

    if isinstance(module, torch.export.ExportedProgram):
        return from_onnx(_to_onnx(torch, module, None))
    if not isinstance(module, torch.nn.Module):
        raise SdhwError(f"from_torch takes a torch.nn.Module or a torch.export.ExportedProgram, not "
                        f"{type(module).__name__}")
    if isinstance(example_input, np.ndarray):
        example_input = torch.as_tensor(example_input, dtype=torch.float32)
    if not isinstance(example_input, torch.Tensor):
        raise SdhwError(f"the example input must be a torch.Tensor or a NumPy array, not "
                        f"{type(example_input).__name__}")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            proto = _to_onnx(torch, module, (example_input,))
    finally:
        module.train(was_training)
    return from_onnx(proto)


def load_torch(path) -> Model:
    """Import a ``torch.export`` program saved with ``torch.export.save`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SdhwError(f"model file {str(path)!r} does not exist")
    torch = _torch()
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            _refuse_code(archive, path)
    except zipfile.BadZipFile:
        raise SdhwError(f"cannot read {str(path)!r}: it is not a torch.export archive (a zip file); "
                        f"{SAVE_HINT}") from None
    if not any(name.endswith("archive_format") for name in names):
        raise SdhwError(f"{str(path)!r} is not a torch.export archive (a pickled module or state dict from "
                        f"torch.save, or TorchScript?); those are not read, since loading them can run code from "
                        f"the file: {SAVE_HINT}")
    with _quiet_exporter(), _tensors_only():
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as exc:                        # noqa: BLE001 - zip, pickle and schema errors vary
            raise SdhwError(f"cannot read {str(path)!r} as a torch.export program: {_first_line(exc)}") from None
    return from_torch(program, None)
