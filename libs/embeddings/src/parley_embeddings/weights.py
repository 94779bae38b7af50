"""The model's weights: a ``.safetensors`` file read into numpy arrays (no extra package).

The format: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw little-endian data.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

Weights = dict[str, npt.NDArray[np.float32]]


def load_float32(path: Path) -> Weights:
    """Every float32 tensor of the file, by name (arrays are views of one read-only buffer)."""
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    data = memoryview(raw)[8 + header_length :]
    tensors: Weights = {}
    for name, spec in header.items():
        if name == "__metadata__" or spec["dtype"] != "F32":
            continue
        start, end = spec["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(spec["shape"])
    return tensors
