#!/usr/bin/env bash
# The Debian packages the tests use, installed when missing: docker-compose (validates the
# compose file), chromium (the dashboard's browser test), redis-server (the test stacks run their
# own Redis). As root they are installed with apt-get; otherwise the one command to run is
# printed and the exit code is 1.
set -euo pipefail
declare -A package_of=([docker-compose]=docker-compose [chromium]=chromium [redis-server]=redis-server)
missing=()
for command in docker-compose chromium redis-server; do
  command -v "$command" >/dev/null || missing+=("${package_of[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the tests need Debian packages that are missing; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
