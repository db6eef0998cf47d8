#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

# The report's browser test renders the page in Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will be skipped" >&2
  fi
fi

# The real datasets live beside the repo in this workplace (../shared/data).
if [ -z "${MMFUSE_DATA:-}" ] && [ -d ../shared/data ]; then
  export MMFUSE_DATA="$(cd ../shared/data && pwd)"
fi
# A private cache so tests never read features or exported models of another run.
export MMFUSE_CACHE="${MMFUSE_CACHE:-$(mktemp -d)}"
# What pip alone gives a user: the wheel built and installed in a fresh virtualenv
# (`pip install "dist/mmfuse-*.whl[all]"`), one encode per pretrained encoder and the
# README's quick start (scripts/check_install.sh). Run before the full suite only (no pytest
# arguments), so that pytest's summary is the last thing printed;
# MMFUSE_SKIP_INSTALL_CHECK=1 skips it.
if [ "$#" -eq 0 ] && [ -z "${MMFUSE_SKIP_INSTALL_CHECK:-}" ]; then
  bash scripts/check_install.sh
fi
exec python3 -m pytest -q "$@"
