"""The compression formats of an S3 destination (CompressionFormat), each a
writer fed the object's bytes piece by piece, so an object is compressed as
it is read back from the buffer store, never joined whole in memory first.

GZIP is zlib's gzip stream (level 6, gzip's own default); ZIP is an archive
holding one member named as the object without ``.zip``; Snappy is Snappy's
framing format and HADOOP_SNAPPY Hadoop's block format (each block: the
uncompressed length and the compressed length as 4-byte big-endian integers,
then raw Snappy), both through cramjam.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from typing import BinaryIO, Protocol

import cramjam

FORMATS = ("UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY")
#: The file extension an object gets when FileExtension is not given.
EXTENSIONS = {
    "UNCOMPRESSED": "",
    "GZIP": ".gz",
    "ZIP": ".zip",
    "Snappy": ".snappy",
    "HADOOP_SNAPPY": ".hsnappy",
}
GZIP_LEVEL = 6
#: Hadoop's SnappyCodec block size.
HADOOP_BLOCK = 256 * 1024


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Write what is left; the file itself stays open."""
        ...


class _Plain:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        pass


class _Gzip:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def write(self, data: bytes) -> None:
        self.out.write(self.compressor.compress(data))

    def close(self) -> None:
        self.out.write(self.compressor.flush())


class _Zip:
    def __init__(self, out: BinaryIO, member: str) -> None:
        self.archive = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED)
        self.member = self.archive.open(member, "w", force_zip64=True)

    def write(self, data: bytes) -> None:
        self.member.write(data)

    def close(self) -> None:
        self.member.close()
        self.archive.close()


class _Snappy:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.compressor = cramjam.snappy.Compressor()

    def write(self, data: bytes) -> None:
        self.compressor.compress(data)
        self.out.write(bytes(self.compressor.flush()))

    def close(self) -> None:
        self.out.write(bytes(self.compressor.finish()))


class _HadoopSnappy:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) >= HADOOP_BLOCK:
            self._block(bytes(self.pending[:HADOOP_BLOCK]))
            del self.pending[:HADOOP_BLOCK]

    def _block(self, block: bytes) -> None:
        compressed = bytes(cramjam.snappy.compress_raw(block))
        self.out.write(struct.pack(">II", len(block), len(compressed)) + compressed)

    def close(self) -> None:
        if self.pending:
            self._block(bytes(self.pending))
            self.pending.clear()


def writer(compression: str, out: BinaryIO, member: str) -> Writer:
    """A writer of ``compression`` onto ``out``; ``member``: a ZIP's entry name."""
    if compression == "GZIP":
        return _Gzip(out)
    if compression == "ZIP":
        return _Zip(out, member)
    if compression == "Snappy":
        return _Snappy(out)
    if compression == "HADOOP_SNAPPY":
        return _HadoopSnappy(out)
    return _Plain(out)


def decompress(compression: str, data: bytes) -> bytes:
    """An object's bytes as they were before ``compression`` (tests, the CLI)."""
    if compression == "GZIP":
        return zlib.decompress(data, 31)
    if compression == "ZIP":
        import io

        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read(archive.namelist()[0])
    if compression == "Snappy":
        return bytes(cramjam.snappy.decompress(data))
    if compression == "HADOOP_SNAPPY":
        out = bytearray()
        position = 0
        while position < len(data):
            _, size = struct.unpack_from(">II", data, position)
            position += 8
            out += bytes(cramjam.snappy.decompress_raw(data[position : position + size]))
            position += size
        return bytes(out)
    return data
