"""gguf-py's GGUFWriter with metadata arrays packed in one call per array.

gguf-py packs an array (the vocabulary's tokens, scores and types; the BPE merges) one element at a time,
each through `struct.pack` and a type lookup in Python: about 0.2 s for a 32k vocabulary and 1 s for a 150k
one, paid before the first tensor is written. Numbers are packed here with one `struct.pack` per array and
strings with a precompiled length packer; anything else (nested arrays, mixed element types, a big-endian
file) goes through gguf-py's own code. The bytes are gguf-py's (tests/targets/test_gguf_writer.py).
"""

from __future__ import annotations

import struct

import gguf
from gguf import GGUFEndian, GGUFValueType

_LENGTH = struct.Struct("<Q")
_TYPE_OF = {str: GGUFValueType.STRING, bytes: GGUFValueType.STRING, float: GGUFValueType.FLOAT32,
            bool: GGUFValueType.BOOL, int: GGUFValueType.INT32}  # gguf-py's GGUFValueType.get_type, by type


class GGUFWriter(gguf.GGUFWriter):
    def _pack_val(self, val, vtype, add_vtype, sub_type=None) -> bytes:
        fast = (vtype == GGUFValueType.ARRAY and self.endianess == GGUFEndian.LITTLE
                and isinstance(val, (list, tuple)) and val)
        if not fast:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        types = {type(v) for v in val}
        ltype = sub_type if sub_type is not None else (_TYPE_OF.get(types.pop()) if len(types) == 1 else None)
        fmt = self._simple_value_packing.get(ltype)
        if ltype is None or (fmt is None and ltype != GGUFValueType.STRING):
            return super()._pack_val(val, vtype, add_vtype, sub_type)  # nested or mixed: gguf-py decides
        head = struct.pack("<IIQ", vtype, ltype, len(val)) if add_vtype else struct.pack("<IQ", ltype, len(val))
        if fmt is not None:
            return head + struct.pack(f"<{len(val)}{fmt}", *val)
        parts = [head]
        for s in val:
            e = s.encode("utf-8") if isinstance(s, str) else s
            parts.append(_LENGTH.pack(len(e)))
            parts.append(e)
        return b"".join(parts)
