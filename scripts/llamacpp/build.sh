#!/usr/bin/env bash
# llama.cpp for the embedded engine, built to use the CPU it lands on (issue #15 item 3).
#
# llama-cpp-python's wheel is built for a portable AVX2 baseline (the Makefile's CMAKE_ARGS):
# -march=native dies where the CPU advertises AMX and the sandbox forbids it, and AVX2 leaves
# AVX-512 unused where it is there. This builds the same llama.cpp sources (the ones the locked
# sdist carries, hash-checked) as shared libraries with the CPU back-end in variants that ggml
# chooses between at run time, none with AMX (scripts/lib/llamacpp.sh says which and why).
# The build goes to a cache folder keyed by the sdist's SHA-256 and the variants, like pip's
# wheel cache, and .venv/lib/sovllm-llama.cpp links to it; the engine loads it from there
# (src/sovllm/engines/llamacpp/native.py). About 5 minutes on 2 cores, once per machine.
# Off x86-64 Linux it does nothing and the engine keeps llama-cpp-python's own build.
# Usage: scripts/llamacpp/build.sh   (the cache: $SOVLLM_CACHE_DIR, default ~/.cache/sovllm)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SOVLLM_PY=$ROOT/.venv/bin/python
LINK=$ROOT/.venv/lib/sovllm-llama.cpp
# Bump when this script's build flags change; the cache key also hashes scripts/lib/llamacpp.sh.
REVISION=2

STEP_TAG=llama.cpp
# shellcheck source=../lib/steps.sh
. "$ROOT/scripts/lib/steps.sh"
# shellcheck source=../lib/llamacpp.sh
. "$ROOT/scripts/lib/llamacpp.sh"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "$STEP_TAG: not x86-64 Linux; the engine uses llama-cpp-python's own build" >&2
  exit 0
fi
[ -x "$SOVLLM_PY" ] || fail "$SOVLLM_PY is missing: run 'make install'"

# The version and sdist hash the lock pins: the sources built are exactly the ones pip checked.
VERSION=$(awk -F'==' '/^llama-cpp-python==/{sub(/ .*/, "", $2); print $2; exit}' requirements.lock)
SDIST_SHA=$(awk '/^llama-cpp-python==/{p=1} p&&/--hash=sha256:/{sub(/.*sha256:/, ""); sub(/[ \\].*/, ""); print; exit}' requirements.lock)
[ -n "$VERSION" ] && [ -n "$SDIST_SHA" ] || fail "no llama-cpp-python pin in requirements.lock"
LIBSUM=$(sha256sum "$ROOT/scripts/lib/llamacpp.sh" | cut -d' ' -f1)
KEY=$(printf '%s %s %s' "$SDIST_SHA" "$LIBSUM" "$REVISION" | sha256sum | cut -c1-12)
CACHE=${SOVLLM_CACHE_DIR:-$HOME/.cache/sovllm}/llama.cpp
HOME_DIR=$CACHE/$VERSION-$KEY
LIB=$HOME_DIR/lib
LOGS=$HOME_DIR/logs
# Until the build below is checked, the venv points at nothing: the engine then runs the wheel's
# own build rather than libraries that failed their check or belong to another lock.
rm -f "$LINK"
mkdir -p "$CACHE"
# Two checkouts installing at once share the cache: one builds, the other waits, then reuses.
exec 9>"$CACHE/.lock"
flock 9

if [ -e "$LIB/.built" ]; then
  cached "llama.cpp $VERSION, CPU variants $LLAMACPP_VARIANTS" "$LIB"
else
  command -v cmake >/dev/null && command -v ninja >/dev/null && command -v objdump >/dev/null \
    || fail "cmake, ninja and objdump are needed (apt-get install cmake ninja-build binutils)"
  rm -rf "$HOME_DIR"
  SRC=$HOME_DIR/src
  mkdir -p "$LOGS" "$SRC"
  printf 'llama-cpp-python==%s --hash=sha256:%s\n' "$VERSION" "$SDIST_SHA" >"$SRC/requirement.txt"
  step sdist 600 "$SOVLLM_PY" -m pip download --quiet --no-deps --no-binary :all: \
    --require-hashes -r "$SRC/requirement.txt" -d "$SRC"
  step unpack 300 tar -xzf "$SRC/llama_cpp_python-$VERSION.tar.gz" -C "$SRC"
  CPP=$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp
  llamacpp_keep_variants "$CPP"
  llamacpp_variant_flags "$LIB"
  step configure 600 cmake -S "$CPP" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    "${LLAMACPP_FLAGS[@]}" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF
  step build 3600 cmake --build "$SRC/build" --target llama -j "$(nproc)"
  rm -rf "$LIB.partial"
  mkdir -p "$LIB.partial"
  cp -P "$SRC"/build/bin/lib*.so* "$LIB.partial/"
  llamacpp_check "$LIB.partial"
  (cd "$LIB.partial" && sha256sum lib*.so* >SHA256SUMS)
  {
    echo "llama_cpp_python=$VERSION"
    echo "sdist_sha256=$SDIST_SHA"
    echo "variants=$LLAMACPP_VARIANTS"
    echo "revision=$REVISION"
  } >"$LIB.partial/BUILD"
  touch "$LIB.partial/.built"
  mv "$LIB.partial" "$LIB"
  rm -rf "$SRC"
fi
(cd "$LIB" && sha256sum --quiet -c SHA256SUMS) || fail "$LIB does not match its SHA256SUMS"
llamacpp_check "$LIB"
ln -sfn "$LIB" "$LINK"
touch "$LIB/.built" # newer than .venv/.installed, for make
echo "$STEP_TAG: ready; $LINK -> $LIB" >&2
