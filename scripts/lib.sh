# shellcheck shell=bash
# Shared by scripts/demo and scripts/test; source it, do not run it.

# ensure_rust PREFIX: make `cargo` usable in this shell. When it is neither on
# PATH nor in ${CARGO_HOME:-~/.cargo}/bin, install rustup for the user running
# the script (no root needed, nothing asked) with clippy and rustfmt. Needs
# curl and ca-certificates: run scripts/setup-host first. With rustup, also
# adds the machine's musl target (musl_target), which berth's build links
# berth-monitor with and scripts/build-guest the guest agent. PREFIX starts the
# messages, which go to stderr once cargo is there (build-guest's stdout is
# its answer).
ensure_rust() {
    local prefix=$1
    local cargo_home=${CARGO_HOME:-${HOME:?HOME is not set}/.cargo}
    if ! command -v cargo >/dev/null 2>&1 && [[ ! -x ${cargo_home}/bin/cargo ]]; then
        if ! command -v curl >/dev/null 2>&1; then
            echo "${prefix}: cargo and curl not found; run scripts/setup-host, or install Rust with https://rustup.rs" >&2
            exit 1
        fi
        echo "${prefix}: cargo not found; installing Rust with rustup into ${cargo_home} for $(id -un)"
        if ! curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --component clippy,rustfmt; then
            echo "${prefix}: installing rustup failed (see above); install Rust with https://rustup.rs and rerun" >&2
            exit 1
        fi
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        if [[ -f ${cargo_home}/env ]]; then
            # rustup's env file puts its bin directory on PATH.
            # shellcheck source=/dev/null
            source "${cargo_home}/env"
        else
            export PATH=${cargo_home}/bin:${PATH}
        fi
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "${prefix}: cargo still not found after sourcing ${cargo_home}/env" >&2
        exit 1
    fi
    local target
    target=$(musl_target)
    if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "${target}"; then
        echo "${prefix}: adding the Rust target ${target}" >&2
        rustup target add "${target}" >&2
    fi
}

# musl_target: the Rust target of this machine's static programs.
musl_target() {
    echo "$(uname -m)-unknown-linux-musl"
}
