#!/usr/bin/env bash
# Builds llama.cpp's llama-server (CPU) from the source vendored in the llama-cpp-python sdist on PyPI, once
# per version, into a cache outside the repo. Prints the binary's path. The tests use it to serve a tiny GGUF.
#   LLAMA_CPP_PYTHON_VERSION (default 0.3.36)   AGENTCLOUD_CACHE (default ~/.cache/agentcloud)
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${AGENTCLOUD_CACHE:-$HOME/.cache/agentcloud}/llama-server-$version"
binary="$cache/bin/llama-server"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "building llama-server from llama-cpp-python $version (a few minutes, once)" >&2
"$python" -m pip download --quiet --no-binary :all: --no-deps -d "$work" "llama-cpp-python==$version" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF >&2
cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$cache/bin"
cp "$work/build/bin/llama-server" "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "$binary"
