"""PyTorch import (golden.torch_import, golden.model.from_torch, ``sdhw compile model.pt2``)."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from clirun import run

from golden import SdhwError
from golden import format as fmt
from golden.model import forward_float, from_torch, load_model
from golden.onnx_import import to_channel_last

SEED = 3
TORCH_REASON = "PyTorch models need torch and onnxscript (pip install 'sdhw[torch]')"


@pytest.fixture(scope="module")
def torch():
    pytest.importorskip("onnx", reason="the PyTorch import goes through ONNX (pip install 'sdhw[onnx]')")
    pytest.importorskip("onnxscript", reason=TORCH_REASON)
    return pytest.importorskip("torch", reason=TORCH_REASON)


def cnn(torch):
    """Conv-BN-ReLU-max pool, conv-ReLU-average pool, flatten, linear; non-trivial BN statistics."""
    torch.manual_seed(SEED)
    nn = torch.nn
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                           nn.Dropout(0.2), nn.Linear(8 * 2 * 2, 10))
    with torch.no_grad():
        bn = module[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return module


@pytest.fixture(scope="module")
def exported(torch):
    module = cnn(torch)
    module.train()
    x = torch.as_tensor(np.random.default_rng(SEED).normal(size=(16, 3, 8, 8)).astype(np.float32))
    model = from_torch(module, x[:1])
    return module, x, model


def test_from_torch_matches_torch(torch, exported):
    module, x, model = exported
    assert module.training, "from_torch must leave the module in the mode it was in"
    assert [layer.kind for layer in model.layers] == ["conv", "maxpool", "conv", "avgpool", "fc"]
    assert model.input_shape == (8, 8, 3)
    module.eval()
    with torch.no_grad():
        ref = module(x).numpy()
    module.train()
    got = forward_float(model, to_channel_last(x.numpy()))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=f"seed {SEED}")


def test_from_torch_numpy_example_and_exported_program(torch):
    nn = torch.nn
    torch.manual_seed(SEED)
    module = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    x = np.random.default_rng(SEED).random((5, 64)).astype(np.float32)
    model = from_torch(module, x[:1])
    program = torch.export.export(module, (torch.as_tensor(x[:1]),))
    again = from_torch(program, None)
    with torch.no_grad():
        ref = module(torch.as_tensor(x)).numpy()
    for m in (model, again):
        np.testing.assert_allclose(forward_float(m, x), ref, rtol=1e-4, atol=1e-5)


def test_saved_program_compiles(torch, tmp_path):
    nn = torch.nn
    torch.manual_seed(SEED)
    module = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(1, 64),)), path)
    shutil.copy(path, tmp_path / "mlp.pt")
    for model_path in (path, tmp_path / "mlp.pt"):
        out = tmp_path / f"{model_path.suffix[1:]}.sdp"
        rc, stdout, err = run(["compile", model_path, "-o", out, "--epochs", "0", "--json"])
        assert rc == 0, err
        assert [lay["shape"] for lay in json.loads(stdout)["layers"]] == [[16, 64], [10, 16]]
        assert [layer.relu for layer in fmt.load(out).layers] == [True, False]


def test_bad_torch_inputs(torch, tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sigmoid())
    with pytest.raises(SdhwError, match=r"Sigmoid.*supported"):
        from_torch(module, torch.zeros(1, 4))
    with pytest.raises(SdhwError, match="torch.nn.Module"):
        from_torch(object(), torch.zeros(1, 4))
    with pytest.raises(SdhwError, match="example input"):
        from_torch(module, [1.0, 2.0])
    torch.save(torch.nn.Linear(4, 4), tmp_path / "pickled.pt")
    torch.save(torch.nn.Linear(4, 4).state_dict(), tmp_path / "state.pth")
    (tmp_path / "garbage.pt2").write_bytes(b"not a zip at all")
    hint = "torch.export.save"
    cases = {"pickled.pt": ["not a torch.export archive", hint], "state.pth": ["not a torch.export archive", hint],
             "garbage.pt2": ["not a torch.export archive (a zip file)", hint], "absent.pt2": ["does not exist"]}
    for name, words in cases.items():
        rc, _, err = run(["compile", tmp_path / name, "-o", tmp_path / "p.sdp"])
        assert rc == 1 and err.startswith("sdhw: error: ") and err.count("\n") == 1, (name, err)
        assert all(word in err for word in words), (name, err)
    assert not (tmp_path / "p.sdp").exists()


def test_without_torch_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)         # import torch now raises ImportError
    path = tmp_path / "m.pt2"
    path.write_bytes(b"PK")
    with pytest.raises(SdhwError, match=r"sdhw\[torch\]"):
        load_model(path)
    with pytest.raises(SdhwError, match=r"sdhw\[torch\]"):
        from_torch(object(), None)
