"""The compression formats of an S3 destination (CompressionFormat), each a
writer fed the object's bytes piece by piece, so an object is compressed as
it is read back from the buffer store, never joined whole in memory first.

GZIP is zlib's gzip stream (level 6, gzip's own default); ZIP is an archive
holding one member named as the object without ``.zip``; Snappy is Snappy's
framing format and HADOOP_SNAPPY Hadoop's block format (each block: the
uncompressed length and the compressed length as 4-byte big-endian integers,
then raw Snappy), both through cramjam.

A GZIP destination's records are compressed as they are buffered
(``encode``: each put's records to a partition one gzip member, its
*encoding* ``"gzip"``), so writing an object is appending members: a file
of several members is one valid GZIP file (RFC 1952, 2.2), read whole by
gzip, zcat, Python's gzip and the usual readers. Members of a few KiB
compress a little less well than one stream (about 10 to 20 % larger on
varied JSON lines); in exchange an object costs no compression when it
is written and the buffer holds a fraction of the records' bytes.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Protocol

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
#: The encoding buffered records get for a compression (``encode``); the
#: other compressions buffer records as they are.
ENCODINGS = {"GZIP": "gzip"}
#: Hadoop's SnappyCodec block size.
HADOOP_BLOCK = 256 * 1024


def encode(encoding: str | None, data: bytes) -> bytes:
    """``data`` as a buffered chunk of ``encoding`` holds it."""
    if encoding == "gzip":
        return zlib.compress(data, GZIP_LEVEL, wbits=31)
    if encoding is not None:
        raise ValueError(f"unknown chunk encoding {encoding!r}")
    return data


def decode(encoding: str | None, data: bytes) -> bytes:
    """A chunk's records as they came, whatever its ``encoding``."""
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding is not None:
        raise ValueError(f"unknown chunk encoding {encoding!r}")
    return data


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    def write_encoded(self, encoding: str | None, data: bytes) -> None:
        """A chunk's bytes as buffered: appended as they are when already in
        this writer's format, else decoded and written."""
        ...

    def close(self) -> None:
        """Write what is left; the file itself stays open."""
        ...


class _Decoding:
    """``write_encoded`` for the writers that take no encoded chunk as it is."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def write_encoded(self, encoding: str | None, data: bytes) -> None:
        self.write(decode(encoding, data))


class _Plain(_Decoding):
    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        pass


class _Gzip:
    """Members one after the other: the chunks buffered as gzip members as
    they are, the others compressed into a member of their own."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.compressor: Any = None  # the member being compressed, if any

    def write(self, data: bytes) -> None:
        if self.compressor is None:
            self.compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self.out.write(self.compressor.compress(data))

    def write_encoded(self, encoding: str | None, data: bytes) -> None:
        if encoding != "gzip":
            self.write(decode(encoding, data))
            return
        self._end_member()
        self.out.write(data)

    def _end_member(self) -> None:
        if self.compressor is not None:
            self.out.write(self.compressor.flush())
            self.compressor = None

    def close(self) -> None:
        self._end_member()


class _Zip(_Decoding):
    def __init__(self, out: BinaryIO, member: str) -> None:
        self.archive = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED)
        self.member = self.archive.open(member, "w", force_zip64=True)

    def write(self, data: bytes) -> None:
        self.member.write(data)

    def close(self) -> None:
        self.member.close()
        self.archive.close()


class _Snappy(_Decoding):
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.compressor = cramjam.snappy.Compressor()

    def write(self, data: bytes) -> None:
        self.compressor.compress(data)
        self.out.write(bytes(self.compressor.flush()))

    def close(self) -> None:
        self.out.write(bytes(self.compressor.finish()))


class _HadoopSnappy(_Decoding):
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
        return gzip.decompress(data)  # every member
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
