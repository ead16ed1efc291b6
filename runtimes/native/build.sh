#!/usr/bin/env bash
# Build the native runtime (libedgekit + edgekit-rank) into build/native (`make native`).
#
# Installs the system build dependencies where missing (Debian/Ubuntu: cmake, make, a C compiler
# and libc headers, cJSON, utf8proc, OpenSSL's libcrypto for sha256; root or sudo), fetches
# onnxruntime's C header without installing anything (Debian trixie's libonnxruntime-dev through
# a private apt list, unpacked with dpkg-deb into build/native-deps), and links
# the onnxruntime library of the Python wheel (PYTHON, default .venv/bin/python), so the C and
# Python runtimes run the same onnxruntime build. Set EK_SANITIZE=address for an ASan build.
# No third-party code is committed; everything fetched stays under build/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${EK_BUILD_DIR:-$root/build/native}"
python="${PYTHON:-$root/.venv/bin/python}"
deps="$root/build/native-deps"
mkdir -p "$out" "$deps"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: missing system packages and no root/sudo to install them: $*" >&2; exit 2; fi; }

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
[ -f /usr/include/stdio.h ] || need+=(libc6-dev)
[ -f /usr/include/cjson/cJSON.h ] || need+=(libcjson-dev)
[ -f /usr/include/utf8proc.h ] || need+=(libutf8proc-dev)
[ -f /usr/include/openssl/evp.h ] || need+=(libssl-dev)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing system packages: ${need[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# onnxruntime's C header: the system's (trixie and later), else trixie's -dev package unpacked.
header_dir=/usr/include/onnxruntime
if [ ! -f "$header_dir/onnxruntime_c_api.h" ]; then
    header_dir="$deps/ort/usr/include/onnxruntime"
    if [ ! -f "$header_dir/onnxruntime_c_api.h" ]; then
        apt_dir="$deps/apt"
        mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
            > "$apt_dir/sources.list"
        apt_opts=(-qq -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
                  -o APT::Sandbox::User=root -o APT::Update::Post-Invoke::= -o APT::Update::Post-Invoke-Success::=
                  -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false)
        apt-get "${apt_opts[@]}" update
        (cd "$apt_dir" && apt-get "${apt_opts[@]}" download libonnxruntime-dev)
        dpkg-deb -x "$apt_dir"/libonnxruntime-dev_*.deb "$deps/ort"
    fi
fi

ort_lib="$("$python" - <<'PY'
import pathlib, onnxruntime
capi = pathlib.Path(onnxruntime.__file__).parent / "capi"
libs = sorted(capi.glob("libonnxruntime.so*"))
print(libs[0] if libs else "")
PY
)"
if [ -z "$ort_lib" ]; then echo "error: the onnxruntime wheel of $python has no libonnxruntime.so; pip install onnxruntime" >&2; exit 2; fi

# The wheel ships libonnxruntime.so.<version> only; the loader looks for its SONAME: link that name.
soname="$(readelf -d "$ort_lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
mkdir -p "$out/onnxruntime"
ln -sf "$ort_lib" "$out/onnxruntime/${soname:-libonnxruntime.so.1}"
ort_link="$out/onnxruntime/${soname:-libonnxruntime.so.1}"

cmake -S "$here" -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DORT_INCLUDE_DIR="$header_dir" \
    -DORT_LIBRARY="$ort_link" -DEK_SANITIZE="${EK_SANITIZE:-}" >/dev/null
cmake --build "$out" -j "$(nproc)" >/dev/null
echo "built $out/edgekit-rank and $out/libedgekit.so (onnxruntime: $ort_lib)"
