"""Run the llmbuild CLI on a simulated disk that fills: `python -m tests.hardening.diskfull BYTES ARGS...`.

Wraps the writers from outside: every file opened for writing under the stage cache's tmp/ folder
(builtin open: the ONNX writer, gguf-py's GGUFWriter, json and safetensors files written with open)
and gguf-py's tensor writes (numpy's tofile, which bypasses write) check the file's size after each
write; past BYTES the file is cut there and the write fails with ENOSPC, as on a full disk.
"""

from __future__ import annotations

import builtins
import errno
import os
import sys

LIMIT = int(sys.argv[1])
_real_open = builtins.open


def _check(f, name: str) -> None:
    f.flush()
    if os.fstat(f.fileno()).st_size > LIMIT:
        f.truncate(LIMIT)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)


class FillingFile:
    def __init__(self, f, name: str):
        self._f, self._name = f, name

    def write(self, data):
        n = self._f.write(data)
        _check(self._f, self._name)
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def _open(file, mode="r", *args, **kwargs):
    f = _real_open(file, mode, *args, **kwargs)
    path = os.fspath(file) if isinstance(file, (str, bytes, os.PathLike)) else ""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if any(c in mode for c in "wax+") and f"{os.sep}tmp{os.sep}" in path and ".cache" in path and "b" in mode:
        return FillingFile(f, path)
    return f


builtins.open = _open

import gguf.gguf_writer  # noqa: E402  (after the patch: it opens its files through builtins.open)

_write_tensor_data = gguf.gguf_writer.GGUFWriter.write_tensor_data


def write_tensor_data(self, tensor, *args, **kwargs):
    _write_tensor_data(self, tensor, *args, **kwargs)
    for f in self.fout or []:
        raw = f._f if isinstance(f, FillingFile) else f
        _check(raw, getattr(f, "_name", getattr(raw, "name", "?")))


gguf.gguf_writer.GGUFWriter.write_tensor_data = write_tensor_data

if __name__ == "__main__":
    from llmbuild.cli import main

    main(sys.argv[2:])
