"""The .npz writer behind the binary response (contract.Encoded.to_npz): numpy's format, written directly.

np.savez would do, but it costs ~1 ms a response through zipfile; this writes the same bytes layout
(stored zip of .npy 1.0 members) in ~0.15 ms. np.load(io.BytesIO(body)) reads it, without pickles.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _npy(array: np.ndarray) -> bytes:
    """One array in .npy format 1.0 (what np.save writes): magic, header padded to 64 bytes, raw data."""
    array = np.ascontiguousarray(array)
    header = f"{{'descr': {np.lib.format.dtype_to_descr(array.dtype)!r}, 'fortran_order': False, 'shape': {array.shape!r}, }}"
    header += " " * ((-(10 + len(header) + 1)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + array.tobytes()


def _zip_stored(members: dict[str, bytes]) -> bytes:
    """A plain (stored, not compressed) zip of the members: np.savez's layout without zipfile's per-member
    Python overhead (~400 us a response). Bodies stay far below 4 GB, so no zip64 records are needed."""
    parts, central, offset = [], [], 0
    for name, data in members.items():
        fname, crc, size = name.encode(), zlib.crc32(data), len(data)
        # signature, version, flags, method (0 = stored), time, date (1980-01-01), crc, sizes, name length, extra length
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, size, size, len(fname), 0) + fname
        central.append(
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, size, size, len(fname), 0, 0, 0, 0, 0, offset)
            + fname
        )
        parts += [local, data]
        offset += len(local) + size
    directory = b"".join(central)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0)
    return b"".join(parts) + directory + end


def write(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz of named arrays, as np.savez would write it; np.load(io.BytesIO(body)) reads it."""
    return _zip_stored({f"{name}.npy": _npy(array) for name, array in arrays.items()})
