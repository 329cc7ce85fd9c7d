"""The bounded GGUF reader: real files from the gguf package, and hostile ones built by hand."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pytest

from agentcloud.gguf import FILE_TYPES, GGML_TYPES, GGUFError, read_gguf, read_gguf_path
from agentcloud.tiny_gguf import write_tiny_gguf


def test_reads_a_real_gguf(tmp_path: Path) -> None:
    info = read_gguf_path(str(write_tiny_gguf(tmp_path / "m.gguf")))
    assert (info.architecture, info.version, info.block_count, info.context_length) == ("llama", 3, 2, 2048)
    assert (info.embedding_length, info.head_count, info.head_count_kv, info.head_dim) == (64, 4, 2, 16)
    assert info.file_type_name == "F16" and info.has_chat_template and info.name == "tiny-test"
    # 302x64 embedding + 302x64 output + 2 blocks of (64x64 x2 + 32x64 x2 + 128x64 x3) + norms
    expected = 2 * 302 * 64 + 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64 + 2 * 64) + 64
    assert info.parameter_count == expected
    assert 16.0 <= info.bits_per_weight < 16.5


def test_tables_match_the_gguf_package() -> None:
    import gguf

    for type_id, (name, block, size) in GGML_TYPES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)] == (block, size), name
        assert gguf.GGMLQuantizationType(type_id).name == name
    for ftype, name in FILE_TYPES.items():
        assert gguf.LlamaFileType(ftype).name == name


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _header(tensors: int = 0, kvs: int = 1, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


ARCH = _s("general.architecture") + struct.pack("<I", 8) + _s("llama")


def _read(data: bytes) -> object:
    return read_gguf(io.BytesIO(data), len(data))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PK\x03\x04" + b"\0" * 60, "not a GGUF file"),
        (b"GGUF" + struct.pack("<I", 1) + b"\0" * 16, "unsupported GGUF version 1"),
        (b"GGU", "truncated"),
        (_header()[:10], "truncated"),
        (_header(tensors=1 << 40), "tensor count"),
        (_header(kvs=1 << 62), "metadata count"),
        (_header() + struct.pack("<Q", 1 << 60), "exceeds the limit"),  # absurd key length
        (_header() + _s("k") + struct.pack("<I", 8) + struct.pack("<Q", 1 << 50), "exceeds the limit"),
        (_header() + _s("k") + struct.pack("<IIQ", 9, 4, 1 << 40), "array of"),  # absurd array
        (_header() + _s("k") + struct.pack("<I", 99), "unknown value type"),
        (_header() + _s("k") + struct.pack("<I", 8) + _s(b"\xff\xfe"), "not UTF-8"),
        (_header(kvs=1) + _s("general.name") + struct.pack("<I", 8) + _s("x"), "architecture is missing"),
        (_header(tensors=1) + ARCH + _s("w") + struct.pack("<I", 9), "dimensions"),
        (_header(tensors=1) + ARCH + _s("w") + struct.pack("<IQ", 1, 0), "dimension 0 out of range"),
        (
            _header(tensors=1)
            + ARCH
            + _s("w")
            + struct.pack("<IQQQQ", 4, 1 << 20, 1 << 20, 1 << 20, 1 << 20),
            "exceeds the limit",
        ),
        (_header(tensors=1) + ARCH + _s("w") + struct.pack("<IQI", 1, 64, 77), "unknown ggml type"),
        (_header(tensors=1) + ARCH + _s("w") + struct.pack("<IQIQ", 1, 33, 8, 0), "not a multiple"),
        (_header(tensors=1) + ARCH + _s("w") + struct.pack("<IQIQ", 1, 64, 0, 3), "not aligned"),
        (_header(tensors=1) + ARCH + _s("w") + struct.pack("<IQIQ", 1, 1 << 30, 0, 0), "tensor data needs"),
    ],
)
def test_hostile_headers_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(GGUFError, match=reason):
        _read(data)


def test_truncated_real_file(tmp_path: Path) -> None:
    full = write_tiny_gguf(tmp_path / "m.gguf").read_bytes()
    for cut in (100, len(full) // 2, len(full) - 1):
        with pytest.raises(GGUFError, match="truncated"):
            _read(full[:cut])


def test_fuzzed_headers_never_crash(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    seed = write_tiny_gguf(tmp_path / "m.gguf").read_bytes()[:4096]

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, len(seed) - 1), st.binary(min_size=1, max_size=8))
    def mutate(pos: int, patch: bytes) -> None:
        data = seed[:pos] + patch + seed[pos + len(patch) :]
        with contextlib.suppress(GGUFError):  # refusing is fine; any other exception is a bug
            _read(data)

    mutate()
