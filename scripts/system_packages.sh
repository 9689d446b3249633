#!/usr/bin/env bash
# The system packages the test suite needs, installed with apt-get when missing (`make test` and .ci/run):
#   chromium                the browser tests drive Debian's chromium (Playwright cannot download browsers here)
#   fonts-noto-color-emoji  draws the call tree's status icons in the browser test's screenshots
#   bubblewrap              the isolated REPL's sandbox (bwrap)
# Where it cannot install (not root and no sudo, or no apt-get), it says in one line what to run and fails.
set -euo pipefail

PACKAGES=(chromium fonts-noto-color-emoji bubblewrap)

has_package() {
    case "$1" in
        chromium) [ -x "${RLM_CHROMIUM:-/usr/bin/chromium}" ] ;;
        bubblewrap) command -v bwrap >/dev/null ;;
        fonts-noto-color-emoji) command -v fc-list >/dev/null && fc-list | grep -qi "Noto Color Emoji" ;;
    esac
}

missing=()
for package in "${PACKAGES[@]}"; do
    has_package "$package" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

command_line="sudo apt-get update && sudo apt-get install -y ${missing[*]}"
if ! command -v apt-get >/dev/null; then
    echo "system packages missing: ${missing[*]}; install them with your package manager (on Debian: $command_line)" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
    sudo=(sudo)
else
    echo "system packages missing: ${missing[*]}; run: $command_line" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
