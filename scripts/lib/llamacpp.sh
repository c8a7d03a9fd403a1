# llama.cpp built with its CPU back-end in variants chosen at run time, and never AMX: shared by
# scripts/llamacpp/build.sh (the engine's libraries) and scripts/peers/install.sh (a llama-server
# on the same variants, for a like-for-like benchmark). Needs steps.sh's fail.
#
# ggml scores variants by CPUID bits alone (ggml-cpu/arch/x86/cpu-feats.cpp: "this does not
# check for OS support"), so on a machine that advertises AMX and forbids it the sapphirerapids
# variant, the only one with AMX, would win and die with SIGILL: it is never built, and every
# library built is checked for AMX instructions. sandybridge, ivybridge, piledriver (pre-AVX2),
# cannonlake and cooperlake (rare) are about 20 s of build each; those CPUs run the next variant
# down (sse42; skylakex for cannonlake, cascadelake for cooperlake). build.sh's cache key hashes
# this file, so a change here builds anew.
LLAMACPP_VARIANTS="x64 sse42 haswell alderlake skylakex cascadelake icelake zen4"
LLAMACPP_DROPPED="sandybridge ivybridge piledriver cannonlake cooperlake sapphirerapids"

# llamacpp_keep_variants LLAMA_CPP_SRC: removes the dropped variants from ggml's x86 list, then
# checks that the list is exactly LLAMACPP_VARIANTS.
llamacpp_keep_variants() {
  local lists=$1/ggml/src/CMakeLists.txt v listed wanted
  [ -f "$lists" ] || fail "no llama.cpp sources (looked for $lists)"
  for v in $LLAMACPP_DROPPED; do
    sed -i -E "/^\s*ggml_add_cpu_backend_variant\($v(\s|\))/d" "$lists"
  done
  listed=$(sed -n '/GGML_SYSTEM_ARCH STREQUAL "x86"/,/elseif/p' "$lists" \
    | sed -n -E 's/^\s*ggml_add_cpu_backend_variant\(([a-z0-9_]+).*/\1/p' | sort | tr '\n' ' ')
  wanted=$(echo "$LLAMACPP_VARIANTS" | tr ' ' '\n' | sort | tr '\n' ' ')
  [ "$listed" = "$wanted" ] || fail "ggml's x86 variant list is '$listed' after patching, not '$wanted'"
}

# llamacpp_variant_flags BACKEND_DIR: sets LLAMACPP_FLAGS to the CMake flags for a shared build
# whose variants sit in BACKEND_DIR, with libraries that find each other next to themselves and
# nowhere else: RUNPATH exactly $ORIGIN (CMake's build RPATH ends in ":", an empty entry the
# loader reads as the current directory).
llamacpp_variant_flags() {
  LLAMACPP_FLAGS=(-DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
    '-DCMAKE_INSTALL_RPATH=$ORIGIN' -DGGML_NATIVE=OFF
    -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON "-DGGML_BACKEND_DIR=$1")
}

# llamacpp_check DIR: fails unless DIR holds every variant, no library there holds an AMX
# instruction, and each one's RUNPATH is exactly $ORIGIN (tests/integration/test_cpu_variants.py
# checks the same, with its own AMX detector).
llamacpp_check() {
  local dir=$1 f n v listing runpath
  command -v objdump >/dev/null && command -v readelf >/dev/null \
    || fail "objdump and readelf are needed (apt-get install binutils)"
  for v in $LLAMACPP_VARIANTS; do
    [ -f "$dir/libggml-cpu-$v.so" ] || fail "the build made no libggml-cpu-$v.so"
  done
  for f in "$dir"/lib*.so; do
    listing=$(objdump -d --no-show-raw-insn "$f") || fail "objdump cannot read $f"
    n=$(grep -cE '\s(ldtilecfg|sttilecfg|tileloadd|tileloaddt1|tilestored|tilezero|tilerelease|tdpb[su][su]d|tdpbf16ps|tdpfp16ps)\b' <<<"$listing" || true)
    [ "$n" -eq 0 ] || fail "$f holds $n AMX instructions"
    runpath=$(readelf -d "$f" | sed -n -E 's/.*\((RUNPATH|RPATH)\).*\[(.*)\]/\2/p')
    [ "$runpath" = '$ORIGIN' ] || fail "$f searches '$runpath' for its libraries, not \$ORIGIN only"
  done
}
