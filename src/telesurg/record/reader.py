"""Read a telesurg MCAP recording, closed cleanly or cut off by a crash, in file order.

A file a site was killed in has no summary or footer and ends inside a record; a damaged one has a
chunk whose CRC fails. `open_recording` walks the top-level records itself (opcode + length framing),
so it knows the offset of each, stops at the last complete one and says where and why, and parses
each record with the stock `mcap` reader (`StreamReader`, `breakup_chunk` with CRC checks). Every
problem is a `RecordingError`: one line naming the file, the offset and the record.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Footer, Message, Metadata, Schema
from mcap.stream_reader import MAGIC_SIZE, breakup_chunk
from mcap.stream_reader import StreamReader as _StreamReader

from telesurg.record.schemas import SCHEMA_VERSION

MAGIC = b"\x89MCAP0\r\n"
_HEAD = struct.Struct("<BQ")
RECORD_LIMIT = 1 << 30


class RecordingError(ValueError):
    """A recording that cannot be read (or not as a telesurg recording): a one-line message."""


def _opname(opcode: int) -> str:
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"opcode 0x{opcode:02x}"


@dataclass
class Recording:
    """One MCAP file opened for reading; `messages()` yields in file order (one pass at a time)."""

    path: Path
    size: int
    valid_end: int  # end offset of the last complete record
    truncated: str | None  # why reading stops before the end of the file (None: it does not)
    closed: bool  # a footer was found: the writer finished the file
    meta: dict[str, str] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    schemas: dict[int, Schema] = field(default_factory=dict)
    _offsets: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, opcode, length)

    @property
    def telesurg(self) -> bool:
        return "schema_version" in self.meta

    def messages(self) -> Iterator[tuple[Channel, Message]]:
        """Each message with its channel, in the order written; raises RecordingError on damage."""
        with self.path.open("rb") as f:
            for offset, opcode, length in self._offsets:
                if opcode not in _WANTED:
                    continue
                f.seek(offset)
                raw = f.read(_HEAD.size + length)
                record = _parse(raw, self.path, offset, opcode)
                if isinstance(record, Chunk):
                    try:
                        inner = breakup_chunk(record, validate_crc=True)
                    except (McapError, ValueError, struct.error, EOFError) as exc:
                        raise RecordingError(f"{self.path}: chunk at offset {offset} is damaged ({_why(exc)}); "
                                             f"the records before it are readable") from None
                    except Exception as exc:  # noqa: BLE001 - zstd/lz4 errors have their own types
                        raise RecordingError(f"{self.path}: chunk at offset {offset} cannot be decompressed "
                                             f"({_why(exc)})") from None
                else:
                    inner = [record]
                for r in inner:
                    if isinstance(r, Schema):
                        self.schemas[r.id] = r
                    elif isinstance(r, Channel):
                        self.channels[r.id] = r
                    elif isinstance(r, Message):
                        channel = self.channels.get(r.channel_id)
                        if channel is None:
                            raise RecordingError(f"{self.path}: message at offset {offset} names channel "
                                                 f"{r.channel_id}, which no earlier record defines")
                        yield channel, r

    def schema_name(self, channel: Channel) -> str:
        schema = self.schemas.get(channel.schema_id)
        return schema.name if schema is not None else ""

    def decoded(self) -> Iterator[tuple[str, str, Message, dict[str, Any]]]:
        """(topic, schema name, message, JSON body) in file order."""
        for channel, message in self.messages():
            try:
                body = json.loads(message.data)
            except ValueError as exc:
                raise RecordingError(f"{self.path}: message {message.sequence} on {channel.topic} is not "
                                     f"JSON ({exc})") from None
            yield channel.topic, self.schema_name(channel), message, body


_WANTED = {Opcode.CHUNK, Opcode.MESSAGE, Opcode.SCHEMA, Opcode.CHANNEL}


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _parse(raw: bytes, path: Path, offset: int, opcode: int) -> Any:
    try:
        return next(iter(_StreamReader(io.BytesIO(raw), skip_magic=True, emit_chunks=True).records))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a damaged record, said in one line
        raise RecordingError(f"{path}: {_opname(opcode)} record at offset {offset} is damaged ({_why(exc)})") from None


def open_recording(path: Path | str, *, require_telesurg: bool = True) -> Recording:
    """Scan `path`'s record framing and read its metadata; see the module docstring."""
    path = Path(path)
    try:
        size = path.stat().st_size
        f = path.open("rb")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with f:
        if f.read(MAGIC_SIZE) != MAGIC:
            raise RecordingError(f"{path}: not an MCAP file (no MCAP magic at offset 0)")
        rec = Recording(path, size, MAGIC_SIZE, None, False)
        offset = MAGIC_SIZE
        while offset < size:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                rec.truncated = f"cut off inside a record header at offset {offset} (file is {size} bytes)"
                break
            opcode, length = _HEAD.unpack(head)
            end = offset + _HEAD.size + length
            if length > RECORD_LIMIT or end > size:
                rec.truncated = (f"cut off inside a {_opname(opcode)} record at offset {offset} "
                                 f"({length} bytes declared, {size - offset - _HEAD.size} present)")
                break
            rec._offsets.append((offset, opcode, length))
            if opcode == Opcode.METADATA:
                record = _parse(head + f.read(length), path, offset, opcode)
                if isinstance(record, Metadata) and record.name == "telesurg":
                    rec.meta.update(record.metadata)
            else:
                f.seek(end)
            offset = rec.valid_end = end
            if opcode == Opcode.FOOTER:
                rec.closed = True
                rec.valid_end = end
                break
    if require_telesurg:
        version = rec.meta.get("schema_version")
        if version is None:
            raise RecordingError(f"{path}: not a telesurg recording (no 'telesurg' metadata record); "
                                 f"written by `telesurg robot|console --record`?")
        if version != SCHEMA_VERSION:
            raise RecordingError(f"{path}: recorded as {version}; this telesurg reads {SCHEMA_VERSION} "
                                 f"(use the telesurg version that wrote it)")
    return rec


def site_meta(rec: Recording) -> tuple[str, str, float]:
    """(site, role, wall_offset) of a telesurg recording."""
    try:
        return rec.meta["site"], rec.meta.get("role", ""), float(rec.meta["wall_offset"])
    except (KeyError, ValueError) as exc:
        raise RecordingError(f"{rec.path}: telesurg metadata record lacks a valid {exc}") from None


__all__ = ["Footer", "Recording", "RecordingError", "open_recording", "site_meta"]
