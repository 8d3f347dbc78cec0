#!/usr/bin/env bash
# Installs the tools that tests/deploy needs to validate deploy/ without a container engine or a cluster:
#   kubectl    renders the kustomize tree (`kubectl kustomize`); Debian package kubernetes-client
#   docker-compose  validates the Compose file (`docker-compose config`, no engine needed); Debian docker-compose
#   yamllint   lints every YAML file under deploy/; Debian yamllint
#   promtool   checks the Prometheus config and alert rules; Debian prometheus
# Idempotent: a tool already on PATH is left alone. Needs root (or sudo) only when something is missing.
set -euo pipefail

declare -A package_of=(
  [kubectl]=kubernetes-client
  [docker-compose]=docker-compose
  [yamllint]=yamllint
  [promtool]=prometheus
)

missing=()
for tool in kubectl docker-compose yamllint promtool; do
  if command -v "$tool" >/dev/null 2>&1; then
    echo "install-deploy-tools: $tool present ($(command -v "$tool"))"
  else
    missing+=("${package_of[$tool]}")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deploy-tools: nothing to install"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install-deploy-tools: installing ${missing[*]}"
$sudo apt-get update -qq
# prometheus is installed for promtool only.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

for tool in kubectl docker-compose yamllint promtool; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-deploy-tools: $tool still missing" >&2; exit 1; }
done
echo "install-deploy-tools: done"
