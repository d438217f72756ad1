"""Device primitives behind wrapper modules of ours (:mod:`sdhw.ecp5`, :mod:`sdhw.ice40`): which a Verilog text
instantiates, and the text with their modules appended."""
from __future__ import annotations

import re

from . import ecp5, ice40

#: wrapper module -> (device primitive, its Verilog: the primitive in synthesis, a model in simulators)
WRAPPERS = {ecp5.WRAPPER_MODULE: (ecp5.PRIMITIVE, ecp5.WRAPPER_VERILOG),
            ice40.WRAPPER_MODULE: (ice40.PRIMITIVE, ice40.WRAPPER_VERILOG)}


def used_wrappers(verilog_text: str) -> list[str]:
    """The wrapper modules that ``verilog_text`` instantiates."""
    return [name for name in WRAPPERS if re.search(rf"^\s*{name}\b", verilog_text, re.M)]


def device_primitives(verilog_text: str) -> list[str]:
    """The device primitives that ``verilog_text`` instantiates through a wrapper of ours."""
    return [WRAPPERS[name][0] for name in used_wrappers(verilog_text)]


def with_wrappers(verilog_text: str) -> str:
    """``verilog_text`` with the Verilog of every wrapper it instantiates appended."""
    names = used_wrappers(verilog_text)
    if not names:
        return verilog_text
    return verilog_text.rstrip("\n") + "".join("\n" + WRAPPERS[name][1] for name in names)
