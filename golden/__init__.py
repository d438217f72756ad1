"""NumPy golden model of SmartDeal (SD) inference: the single source of truth for the numbers.

Pure NumPy (plus the standard library; the ONNX import reads files with the optional ``onnx``
package); imports nothing from the hardware side.
"""
from .errors import SdhwError

__all__ = ["SdhwError"]
