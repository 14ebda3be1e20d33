#!/usr/bin/env bash
# Installs the build and test tools a fresh machine lacks; skips every tool already present.
# Sourced by .ci/run and by the README's commands, so it also puts the tools on PATH.
set -euo pipefail

TOOLS_DIR="${PUSHCHAT_TOOLS_DIR:-$HOME/.cache/pushchat-tools}"
CARGO_LEPTOS_VERSION=0.3.10
WASM_BINDGEN_VERSION=0.2.130   # must equal wasm-bindgen in Cargo.lock
BINARYEN_VERSION=132           # Debian's wasm-opt 108 builds pages that do not hydrate
AXE_CORE_VERSION=4.14.1        # the browser tests' accessibility checker

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "tools: apt-get install ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

# web-push's encryption uses OpenSSL.
apt_install pkg-config libssl-dev
command -v npm >/dev/null || apt_install npm

export PATH="$HOME/.cargo/bin:$TOOLS_DIR/node_modules/.bin:$PATH"
# Where the browser tests find axe-core's script (install_browser_test_tools installs it).
export PUSHCHAT_AXE_JS="$TOOLS_DIR/axe-core-$AXE_CORE_VERSION/node_modules/axe-core/axe.min.js"

rustup target list --installed | grep -qx wasm32-unknown-unknown \
    || rustup target add wasm32-unknown-unknown

if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
    echo "tools: cargo install cargo-leptos $CARGO_LEPTOS_VERSION (about 16 min once)"
    cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
    # --locked fails: its lockfile wants a crate version the registry does not serve.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

if ! "$TOOLS_DIR/node_modules/.bin/wasm-opt" --version 2>/dev/null | grep -q "$BINARYEN_VERSION"; then
    mkdir -p "$TOOLS_DIR"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS_DIR" "binaryen@$BINARYEN_VERSION"
fi

# The browser tests' Firefox and Chromium (for its DevTools' installability check) and
# their WebDrivers; only the test command needs them.
install_browser_test_tools() {
    apt_install firefox-esr chromium chromium-driver
    command -v geckodriver >/dev/null || cargo install geckodriver --locked
    # axe-core's script, which the accessibility tests inject into the page; a folder of
    # its own per version, so the pin is all that decides what runs.
    [ -f "$PUSHCHAT_AXE_JS" ] || npm install --silent --no-audit --no-fund \
        --prefix "$TOOLS_DIR/axe-core-$AXE_CORE_VERSION" "axe-core@$AXE_CORE_VERSION"
}
