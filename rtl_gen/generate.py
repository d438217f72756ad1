"""Configuration -> Verilog top + ``manifest.json`` (``sdhw generate``)."""
from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from amaranth.lib import wiring

from golden import SdhwError
from golden.format import write_files_atomic
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, PARAMETERS, AcceleratorConfig, check_file_values, check_fits
from sdhw.descriptor import FIELDS, HEADER_FIELDS
from sdhw.vendor import device_primitives, with_wrappers

TOP_NAME = "sdhw_top"
MANIFEST_VERSION = 1


def tool_version() -> str:
    try:
        return version("sdhw")
    except PackageNotFoundError:
        return "0+unknown"


def load_config_file(path) -> dict:
    """Parameters from a TOML or JSON file (a flat table of :data:`sdhw.config.PARAMETERS`)."""
    path = Path(path)
    if not path.is_file():
        raise SdhwError(f"config file {str(path)!r} does not exist")
    text = path.read_bytes()
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:                         # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text.decode())
        else:
            raise SdhwError(f"config file {str(path)!r} must be .toml or .json")
    except (ValueError, RecursionError) as exc:                 # UnicodeDecodeError is a ValueError
        raise SdhwError(f"cannot parse config file {str(path)!r}: {' '.join(str(exc).split())}") from None
    if not isinstance(values, dict):
        raise SdhwError(f"config file {str(path)!r} must hold a table of parameters")
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise SdhwError(f"config file {str(path)!r} has unknown parameter(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(PARAMETERS)}")
    check_file_values(values, f"config file {str(path)!r}")
    return values


def make_config(file_values: dict | None = None, **overrides) -> AcceleratorConfig:
    """Config from a file's values with command-line overrides (``None`` overrides are ignored)."""
    values = dict(file_values or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return AcceleratorConfig.from_dict(values)


def _ports(top) -> list[dict]:
    ports = [{"name": "clk", "direction": "in", "width": 1}, {"name": "rst", "direction": "in", "width": 1}]
    for path, member, value in top.signature.flatten(top):
        name = "__".join(str(p) for p in path)
        ports.append({"name": name, "direction": "in" if member.flow == wiring.In else "out",
                      "width": len(value)})
    return ports


def memory_map(cfg: AcceleratorConfig) -> dict:
    def chunks(width):
        n = (width + 31) // 32
        return {"chunks": n, "chunk_bits": (n - 1).bit_length() if n > 1 else 0}

    return {
        "address_bits": hb.ADDR_BITS, "region_shift": 16, "data_bits": 32,
        "regions": {"csr": hb.REGION_CSR, "descriptors": hb.REGION_DESC, "codes": hb.REGION_CODES,
                    "bases": hb.REGION_BASES, "bias": hb.REGION_BIAS,
                    "act0": hb.REGION_ACT0, "act1": hb.REGION_ACT1},
        "csr": {"id": hb.CSR_ID, "version": hb.CSR_VERSION, "lanes": hb.CSR_LANES, "control": hb.CSR_CONTROL,
                "status": hb.CSR_STATUS, "cycles": hb.CSR_CYCLES, "macs": hb.CSR_MACS,
                "rows_skipped": hb.CSR_SKIPPED, "stall_cycles": hb.CSR_STALLS, "depths": hb.CSR_DEPTHS},
        "id_magic": hb.ID_MAGIC,
        "control_bits": {"start": hb.CONTROL_START, "clear": hb.CONTROL_CLEAR},
        "status_bits": {"busy": hb.STATUS_BUSY, "done": hb.STATUS_DONE, "error": hb.STATUS_ERROR,
                        "error_code": [8, 15], "layer": [16, 31]},
        "error_codes": {str(k): v for k, v in hb.ERROR_NAMES.items()},
        "wide_entries": {"codes": chunks(cfg.code_word_bits), "bases": chunks(cfg.basis_width)},
        "descriptor_words": DESC_WORDS,
        "descriptor_fields": {k: list(v) for k, v in FIELDS.items()},
        "row_header_fields": {k: list(v) for k, v in HEADER_FIELDS.items()},
    }


def build_manifest(cfg: AcceleratorConfig, top, resources: dict) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "generator": "sdhw", "version": tool_version(),
        "top": TOP_NAME, "verilog": f"{TOP_NAME}.v",
        "config": cfg.as_dict(),
        "lanes": {"pes": cfg.pes, "channel_lanes": cfg.channel_lanes, "pixel_lanes": cfg.pixel_lanes},
        "memories": {name: {"depth": d, "width": w} for name, (d, w) in cfg.memories().items()},
        "resources_estimate": resources,
        "ports": _ports(top),
        "memory_map": memory_map(cfg),
    }


def generate(cfg: AcceleratorConfig, out_dir) -> dict:
    """Elaborate ``cfg`` and write ``out_dir/sdhw_top.v`` and ``out_dir/manifest.json`` (atomically)."""
    from amaranth.back import verilog

    from sdhw.accelerator import Accelerator

    resources = check_fits(cfg)
    top = Accelerator(cfg, vendor_primitives=True)
    text = with_wrappers(verilog.convert(top, name=TOP_NAME, emit_src=False))
    manifest = build_manifest(cfg, top, resources)
    # through wrappers of ours (sdhw.vendor): the primitive under `ifdef SYNTHESIS, a behavioural model otherwise
    manifest["device_primitives"] = device_primitives(text)
    write_files_atomic(out_dir, {f"{TOP_NAME}.v": text.encode(),
                                 "manifest.json": (json.dumps(manifest, indent=2) + "\n").encode()})
    return manifest


def load_manifest(path) -> tuple[dict, AcceleratorConfig]:
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise SdhwError(f"manifest {str(path)!r} does not exist")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
            raise TypeError("valid: a JSON object whose 'config' is an object of parameters")
        cfg = AcceleratorConfig.from_dict(manifest["config"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SdhwError(f"manifest {str(path)!r} is not valid: {' '.join(str(exc).split())}") from None
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise SdhwError(f"manifest {str(path)!r} has version {manifest.get('manifest_version')!r}; "
                        f"this tool reads version {MANIFEST_VERSION}")
    return manifest, cfg
