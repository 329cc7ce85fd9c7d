"""Streaming multipart/form-data reading (python-multipart's parser), shared by the audio and upload routes.

Small text fields are collected with a size bound; the one file part is handed, chunk by chunk, to a writer,
so a large file never sits in memory here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentcloud.gateway.errors import GatewayError, bad_request

MAX_PARTS = 32
MAX_BOUNDARY = 70  # RFC 2046, section 5.1.1


class MultipartReader:
    """A streaming multipart/form-data parser: one file part to a sink, small fields kept, bounded."""

    def __init__(
        self,
        content_type: str,
        file_field: str,
        write_file: Callable[[bytes], None],
        max_field_bytes: int = 1024,
    ) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        ctype, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            raise GatewayError(
                415, f"send multipart/form-data with a '{file_field}' part", code="unsupported_media_type"
            )
        if len(boundary) > MAX_BOUNDARY:
            raise bad_request(
                f"multipart boundary of {len(boundary)} characters; RFC 2046 allows 1 to {MAX_BOUNDARY}",
                code="bad_boundary",
            )
        self._options = parse_options_header
        self.file_field = file_field
        self.write_file = write_file
        self.max_field_bytes = max_field_bytes
        self.fields: dict[str, str] = {}
        self.parts = 0
        self.files = 0
        self.filename: str | None = None
        self.file_type: str | None = None
        self._part: dict[str, Any] = {}
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except GatewayError:
            raise
        except Exception as exc:  # python-multipart raises several error types on malformed input
            raise bad_request(f"malformed multipart body: {type(exc).__name__}") from None

    def finish(self) -> None:
        self.feed(b"")
        self._parser.finalize()

    # -- parser callbacks -------------------------------------------------------------------------------
    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise GatewayError(400, f"more than {MAX_PARTS} form parts", code="too_many_parts")
        self._part = {
            "headers": {},
            "field": b"",
            "value": b"",
            "name": "",
            "is_file": False,
            "data": bytearray(),
        }

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._part["field"] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._part["value"] += data[start:end]

    def _header_end(self) -> None:
        self._part["headers"][self._part["field"].lower()] = self._part["value"]
        self._part["field"], self._part["value"] = b"", b""

    def _headers_done(self) -> None:
        headers = self._part["headers"]
        _, disp = self._options(headers.get(b"content-disposition", b""))
        self._part["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        if self._part["name"] == self.file_field:
            self._part["is_file"] = True
            self.files += 1
            if self.files > 1:
                raise GatewayError(400, f"send exactly one '{self.file_field}' part", code="too_many_files")
            filename, ctype = disp.get(b"filename"), headers.get(b"content-type")
            self.filename = filename.decode("utf-8", "replace") if filename else None
            self.file_type = ctype.decode("latin-1") if ctype else None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part["is_file"]:
            self.write_file(data[start:end])
            return
        self._part["data"] += data[start:end]
        if len(self._part["data"]) > self.max_field_bytes:
            raise GatewayError(400, f"form field {self._part['name']!r} is too long", code="field_too_long")

    def _end(self) -> None:
        if not self._part["is_file"] and self._part["name"] and self._part["name"] not in self.fields:
            self.fields[self._part["name"]] = self._part["data"].decode("utf-8", "replace")
