# Shared by scripts/serve and scripts/test: install what a fresh Debian machine
# lacks, and keep one cargo target dir outside the checkout so rebuilds are reused.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages PKG...: apt-get installs the Debian packages that are missing.
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The engine behind deno_core (QuickJS + WAMR) builds with CMake and Debian's simde.
ensure_build_deps() {
  ensure_packages cmake libsimde-dev make gcc g++ pkg-config
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install a Rust toolchain (rustup) first" >&2
    exit 1
  fi
}

# Node.js and npm, for the TypeScript SDK and the web app.
ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null || ensure_packages nodejs npm
}

# The TypeScript SDK and the pet-store web app on it, each from its lockfile.
build_web() {
  ensure_node
  (cd client-sdk-ts && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
  (cd examples/petstore-web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
}
