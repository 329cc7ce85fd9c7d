"""A bounded GGUF header reader for untrusted uploads (llama.cpp's loader has had integer overflows from
crafted headers, so every count, length and size read here is checked against a limit before it is used).

Reads the magic, version, metadata and tensor table; never loads tensor data. Checks that every tensor lies
inside the file (a truncated upload is refused). `read_gguf` is pure (a binary file object and its size);
`read_gguf_bounded` runs it in a child process bounded in time and memory, for uploads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from agentcloud.errors import InfraError

MAGIC = b"GGUF"
MAX_TENSORS = 100_000
MAX_KV = 100_000
MAX_KEY_BYTES = 1024
MAX_STRING_BYTES = 4 * 1024 * 1024  # chat templates can be large; tokens are short
MAX_ARRAY_ITEMS = 1 << 24
MAX_HEADER_BYTES = 512 * 1024 * 1024
MAX_DIMS = 4
MAX_DIM = 1 << 40
MAX_ELEMENTS = 1 << 48
MAX_NAME_BYTES = 256
MAX_ALIGNMENT = 1 << 16

# ggml tensor types: id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# general.file_type -> name (llama.cpp's LLAMA_FTYPE_*)
FILE_TYPES: dict[int, str] = {
    0: "ALL_F32",
    1: "MOSTLY_F16",
    2: "MOSTLY_Q4_0",
    3: "MOSTLY_Q4_1",
    7: "MOSTLY_Q8_0",
    8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1",
    10: "MOSTLY_Q2_K",
    11: "MOSTLY_Q3_K_S",
    12: "MOSTLY_Q3_K_M",
    13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S",
    15: "MOSTLY_Q4_K_M",
    16: "MOSTLY_Q5_K_S",
    17: "MOSTLY_Q5_K_M",
    18: "MOSTLY_Q6_K",
    19: "MOSTLY_IQ2_XXS",
    20: "MOSTLY_IQ2_XS",
    21: "MOSTLY_Q2_K_S",
    22: "MOSTLY_IQ3_XS",
    23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S",
    25: "MOSTLY_IQ4_NL",
    26: "MOSTLY_IQ3_S",
    27: "MOSTLY_IQ3_M",
    28: "MOSTLY_IQ2_S",
    29: "MOSTLY_IQ2_M",
    30: "MOSTLY_IQ4_XS",
    31: "MOSTLY_IQ1_M",
    32: "MOSTLY_BF16",
    36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0",
    38: "MOSTLY_MXFP4_MOE",
}

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
STRING, ARRAY = 8, 9


class GGUFError(InfraError, ValueError):
    """The file is not a GGUF we accept; the message says why."""


@dataclass(frozen=True)
class Tensor:
    """One tensor's name, type, shape and size, from a GGUF header."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int
    nbytes: int

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says: architecture, context, layers, heads, tensors, size."""

    version: int
    architecture: str
    name: str | None
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    file_type: int | None
    tensor_count: int
    parameter_count: int
    tensor_bytes: int
    data_offset: int
    file_size: int
    has_chat_template: bool
    metadata_keys: tuple[str, ...] = field(default=())

    @property
    def file_type_name(self) -> str:
        if self.file_type is None:
            return "unknown"
        return FILE_TYPES.get(self.file_type, f"type {self.file_type}").removeprefix("MOSTLY_")

    @property
    def bits_per_weight(self) -> float:
        return self.tensor_bytes * 8 / self.parameter_count if self.parameter_count else 0.0

    @property
    def head_dim(self) -> int | None:
        if self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "name": self.name,
            "version": self.version,
            "context_length": self.context_length,
            "block_count": self.block_count,
            "quantization": self.file_type_name,
            "parameter_count": self.parameter_count,
            "bits_per_weight": round(self.bits_per_weight, 2),
            "tensor_bytes": self.tensor_bytes,
            "file_size": self.file_size,
            "tensor_count": self.tensor_count,
        }


class _Reader:
    def __init__(self, f: IO[bytes], file_size: int) -> None:
        self.f = f
        self.pos = 0
        self.file_size = file_size

    def read(self, n: int, what: str) -> bytes:
        if self.pos + n > self.file_size:
            raise GGUFError(
                f"truncated: the file ends inside the header while reading {what} (at byte {self.pos})"
            )
        if self.pos + n > MAX_HEADER_BYTES:
            raise GGUFError(f"the header exceeds {MAX_HEADER_BYTES} bytes (while reading {what})")
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFError(
                f"truncated: the file ends inside the header while reading {what} (at byte {self.pos})"
            )
        self.pos += n
        return data

    def scalar(self, fmt: str, size: int, what: str) -> Any:
        return struct.unpack(fmt, self.read(size, what))[0]

    def u32(self, what: str) -> int:
        return int(self.scalar("<I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.scalar("<Q", 8, what))

    def string(self, what: str, max_bytes: int = MAX_STRING_BYTES) -> str:
        n = self.u64(f"{what} length")
        if n > max_bytes:
            raise GGUFError(f"{what}: string of {n} bytes exceeds the limit of {max_bytes}")
        raw = self.read(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{what}: not UTF-8") from None


def _value(r: _Reader, kind: int, key: str, depth: int = 0) -> Any:
    if kind in _SCALARS:
        fmt, size = _SCALARS[kind]
        return r.scalar(fmt, size, key)
    if kind == STRING:
        return r.string(key)
    if kind == ARRAY:
        if depth >= 2:
            raise GGUFError(f"{key}: arrays nested deeper than 2 levels")
        item_kind = r.u32(f"{key} item type")
        count = r.u64(f"{key} item count")
        if count > MAX_ARRAY_ITEMS:
            raise GGUFError(f"{key}: array of {count} items exceeds the limit of {MAX_ARRAY_ITEMS}")
        if item_kind in _SCALARS and item_kind != 7:
            fmt, size = _SCALARS[item_kind]
            r.read(size * count, key)  # long numeric arrays (token scores, types) are skipped, not kept
            return count
        if count > 64:  # read through, keep nothing: memory stays flat whatever the count
            for _ in range(count):
                _value(r, item_kind, key, depth + 1)
            return count
        return [_value(r, item_kind, key, depth + 1) for _ in range(count)]
    raise GGUFError(f"{key}: unknown value type {kind}")


def _int(meta: dict[str, Any], key: str) -> int | None:
    value = meta.get(key)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_gguf(f: IO[bytes], file_size: int, progress: Callable[[int], None] | None = None) -> GGUFInfo:
    r = _Reader(f, file_size)
    if r.read(4, "magic") != MAGIC:
        raise GGUFError("not a GGUF file (the first four bytes are not 'GGUF')")
    version = r.u32("version")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version} (2 and 3 are accepted)")
    tensor_count = r.u64("tensor count")
    kv_count = r.u64("metadata count")
    if tensor_count > MAX_TENSORS:
        raise GGUFError(f"tensor count {tensor_count} exceeds the limit of {MAX_TENSORS}")
    if kv_count > MAX_KV:
        raise GGUFError(f"metadata count {kv_count} exceeds the limit of {MAX_KV}")
    meta: dict[str, Any] = {}
    for i in range(kv_count):
        key = r.string(f"metadata key #{i}", MAX_KEY_BYTES)
        kind = r.u32(f"{key} type")
        meta[key] = _value(r, kind, key)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError("general.architecture is missing")
    alignment = _int(meta, "general.alignment") or 32
    if alignment > MAX_ALIGNMENT or alignment & (alignment - 1):
        raise GGUFError(f"general.alignment {alignment} is not a power of two up to {MAX_ALIGNMENT}")
    tensors = []
    for i in range(tensor_count):
        name = r.string(f"tensor #{i} name", MAX_NAME_BYTES)
        n_dims = r.u32(f"{name} dimensions")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"tensor {name}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        shape = tuple(r.u64(f"{name} dimension") for _ in range(n_dims))
        elements = 1
        for d in shape:
            if not 1 <= d <= MAX_DIM:
                raise GGUFError(f"tensor {name}: dimension {d} out of range")
            elements *= d
            if elements > MAX_ELEMENTS:
                raise GGUFError(f"tensor {name}: {elements}+ elements exceeds the limit")
        type_id = r.u32(f"{name} type")
        if type_id not in GGML_TYPES:
            raise GGUFError(f"tensor {name}: unknown ggml type {type_id}")
        type_name, block, block_bytes = GGML_TYPES[type_id]
        if shape[0] % block:
            raise GGUFError(
                f"tensor {name}: first dimension {shape[0]} is not a multiple of the {type_name} block "
                f"({block})"
            )
        offset = r.u64(f"{name} offset")
        if offset % alignment:
            raise GGUFError(f"tensor {name}: offset {offset} is not aligned to {alignment}")
        tensors.append(Tensor(name, shape, type_name, offset, elements // block * block_bytes))
        if progress:
            progress(i)
    data_offset = (r.pos + alignment - 1) // alignment * alignment
    end = max((t.offset + t.nbytes for t in tensors), default=0)
    if data_offset + end > file_size:
        raise GGUFError(
            f"truncated: tensor data needs {data_offset + end} bytes but the file has {file_size}"
        )
    return GGUFInfo(
        version=version,
        architecture=arch,
        name=meta.get("general.name") if isinstance(meta.get("general.name"), str) else None,
        context_length=_int(meta, f"{arch}.context_length"),
        block_count=_int(meta, f"{arch}.block_count"),
        embedding_length=_int(meta, f"{arch}.embedding_length"),
        head_count=_int(meta, f"{arch}.attention.head_count"),
        head_count_kv=_int(meta, f"{arch}.attention.head_count_kv"),
        file_type=_int(meta, "general.file_type"),
        tensor_count=tensor_count,
        parameter_count=sum(t.elements for t in tensors),
        tensor_bytes=sum(t.nbytes for t in tensors),
        data_offset=data_offset,
        file_size=file_size,
        has_chat_template=isinstance(meta.get("tokenizer.chat_template"), str),
        metadata_keys=tuple(meta),
    )


def read_gguf_path(path: str) -> GGUFInfo:
    with open(path, "rb") as f:
        return read_gguf(f, os.fstat(f.fileno()).st_size)


CHECK_TIMEOUT_S = 60.0
CHECK_MEMORY_BYTES = 1 << 30


def read_gguf_bounded(
    path: str, timeout_s: float = CHECK_TIMEOUT_S, memory_bytes: int = CHECK_MEMORY_BYTES
) -> GGUFInfo:
    """`read_gguf_path` in a child process bounded in time and address space, for files from users: a
    crafted header costs the gateway neither its event loop (no GIL shared) nor its memory."""

    def limits() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        cpu = max(1, math.ceil(timeout_s))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))

    try:
        done = subprocess.run(
            [sys.executable, "-m", "agentcloud.gguf", path],
            capture_output=True,
            timeout=timeout_s,
            preexec_fn=limits,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GGUFError(f"reading the header took more than {timeout_s:g} s") from None
    out = done.stdout.decode("utf-8", "replace").strip()
    try:
        answer = json.loads(out.splitlines()[-1]) if out else {}
    except json.JSONDecodeError:
        answer = {}
    if "error" in answer:
        raise GGUFError(str(answer["error"]))
    if done.returncode != 0 or "info" not in answer:
        if b"MemoryError" in done.stderr:
            raise GGUFError(f"reading the header needs more than {memory_bytes >> 20} MiB")
        raise GGUFError(f"the header could not be read (checker exited with {done.returncode})")
    fields = dict(answer["info"])
    fields["metadata_keys"] = tuple(fields.get("metadata_keys", ()))
    return GGUFInfo(**fields)


def _main(argv: list[str]) -> int:
    """`python -m agentcloud.gguf PATH`: the header as one JSON line ({"info": ...} or {"error": ...})."""
    try:
        info = read_gguf_path(argv[0])
    except (GGUFError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps({"info": dataclasses.asdict(info)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
