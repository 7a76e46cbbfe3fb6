#!/bin/sh
# Installs the reverprox client (and, with --server, the relay) for this machine from a release:
# picks the build for the OS and CPU, checks it against the release's SHA256SUMS, and only then
# puts it in place.
#
#   curl -fsSL https://github.com/reverprox/reverprox/releases/latest/download/install.sh | sh
#   curl -fsSL .../install.sh | sh -s -- --server        # also reverprox-server
#
# Environment (all optional):
#   REVERPROX_VERSION         release tag to install, e.g. v1.2.0 (default: the latest release)
#   REVERPROX_REPO            GitHub repository to install from (default: reverprox/reverprox)
#   REVERPROX_RELEASE_URL     where the release's files are, overriding the two above (a mirror)
#   REVERPROX_INSTALL_DIR     where to install (default: ~/.local/bin)
#   REVERPROX_INSTALL_SERVER  1: also install reverprox-server (same as --server)
#
# POSIX sh (dash, bash, busybox ash): it needs uname, mktemp, mkdir, cp, mv, rm, chmod, curl or wget,
# and sha256sum or `shasum -a 256`.
set -eu

say() { printf 'install.sh: %s\n' "$*"; }
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

usage() {
  cat <<'EOF'
usage: install.sh [--server]
  --server   also install reverprox-server (the relay); or set REVERPROX_INSTALL_SERVER=1
Installs reverprox into $REVERPROX_INSTALL_DIR (default ~/.local/bin) after checking it against
the release's SHA256SUMS. REVERPROX_VERSION picks a release tag (default: the latest).
EOF
}

# The Deno compile target naming this machine's build (the release's file names use it).
detect_target() {
  os=$(uname -s)
  cpu=$(uname -m)
  case $os in
    Linux) os_part=unknown-linux-gnu ;;
    Darwin) os_part=apple-darwin ;;
    MINGW* | MSYS* | CYGWIN* | Windows_NT)
      die "install.sh does not install on Windows. Download reverprox-x86_64-pc-windows-msvc.exe" \
        "(and reverprox-server-x86_64-pc-windows-msvc.exe for the relay) from $base/ and check it" \
        "against $base/SHA256SUMS (PowerShell: Get-FileHash <file>)."
      ;;
    *) die "no reverprox build for the OS '$os' (there are builds for Linux, macOS and Windows)" ;;
  esac
  case $cpu in
    x86_64 | amd64) cpu_part=x86_64 ;;
    aarch64 | arm64) cpu_part=aarch64 ;;
    *) die "no reverprox build for the CPU '$cpu' on $os (there are builds for x86_64 and arm64)" ;;
  esac
  printf '%s-%s\n' "$cpu_part" "$os_part"
}

# download URL FILE: fails, saying which URL, on any HTTP error (curl -f, wget's default).
download() {
  if have curl; then
    curl -fsSL --retry 2 -o "$2" "$1" || return 1
  elif have wget; then
    wget -q -O "$2" "$1" || return 1
  else
    die "neither curl nor wget is installed: install one of them and run install.sh again"
  fi
}

sha256_of() {
  if have sha256sum; then
    sum=$(sha256sum "$1")
  elif have shasum; then
    sum=$(shasum -a 256 "$1")
  else
    die "neither sha256sum nor shasum is installed: cannot check the download, so nothing was installed"
  fi
  printf '%s\n' "${sum%% *}"
}

# The checksum SHA256SUMS lists for NAME ("<hex>  <name>", or "<hex> *<name>" in binary mode).
expected_sum() {
  while read -r sum file; do
    if [ "$file" = "$1" ] || [ "$file" = "*$1" ]; then
      printf '%s\n' "$sum"
      return 0
    fi
  done <"$tmp/SHA256SUMS"
  return 1
}

# fetch_verified NAME: downloads NAME into $tmp and checks it; dies (installing nothing) if it cannot.
fetch_verified() {
  say "downloading $base/$1"
  download "$base/$1" "$tmp/$1" ||
    die "could not download $1 from $base/: the release has no build named $1 for this" \
      "machine ($target), or the download failed (see above). Nothing was installed."
  want=$(expected_sum "$1") ||
    die "SHA256SUMS of this release has no entry for $1: refusing to install an unchecked file." \
      "Nothing was installed."
  got=$(sha256_of "$tmp/$1")
  [ "$got" = "$want" ] ||
    die "checksum mismatch for $1: SHA256SUMS says $want, the download is $got. The file is" \
      "corrupt or was tampered with; nothing was installed."
}

# install_one NAME FILE: copies beside the target, then renames, so a running old binary is replaced
# whole and a half-copied file never sits at the final path.
install_one() {
  chmod 755 "$tmp/$2"
  cp "$tmp/$2" "$install_dir/.$1.new"
  mv -f "$install_dir/.$1.new" "$install_dir/$1"
  report=$("$install_dir/$1" --version 2>&1) || report="(it did not run: $report)"
  say "installed $install_dir/$1 from $base/$2 (release: $version); it says: $report"
}

main() {
  with_server=${REVERPROX_INSTALL_SERVER:-0}
  for arg in "$@"; do
    case $arg in
      --server) with_server=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        usage >&2
        die "unknown argument '$arg'"
        ;;
    esac
  done

  repo=${REVERPROX_REPO:-reverprox/reverprox}
  version=${REVERPROX_VERSION:-latest}
  if [ -n "${REVERPROX_RELEASE_URL:-}" ]; then
    base=${REVERPROX_RELEASE_URL%/}
  elif [ -n "${REVERPROX_VERSION:-}" ]; then
    base=https://github.com/$repo/releases/download/$REVERPROX_VERSION
  else
    base=https://github.com/$repo/releases/latest/download
  fi
  install_dir=${REVERPROX_INSTALL_DIR:-${HOME:?HOME is not set: set REVERPROX_INSTALL_DIR}/.local/bin}

  target=$(detect_target)
  names="reverprox"
  [ "$with_server" = 1 ] && names="$names reverprox-server"

  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM
  download "$base/SHA256SUMS" "$tmp/SHA256SUMS" ||
    die "could not download $base/SHA256SUMS (see above): no such release ($version), or the" \
      "download failed. Nothing was installed."
  # Every file is checked before any is installed: a bad server build must not leave a new client
  # beside an old relay.
  for name in $names; do fetch_verified "$name-$target"; done
  if ! mkdir -p "$install_dir" 2>/dev/null || ! [ -w "$install_dir" ]; then
    die "cannot write to $install_dir: set REVERPROX_INSTALL_DIR to a directory you own. Nothing was installed."
  fi
  for name in $names; do install_one "$name" "$name-$target"; done

  case ":${PATH:-}:" in
    *":$install_dir:"*) ;;
    *) say "$install_dir is not on your PATH; add it, e.g. in ~/.profile: export PATH=\"$install_dir:\$PATH\"" ;;
  esac
}

main "$@"
