#!/usr/bin/env bash
# Regenerates the hash locks and the SBOM from pyproject.toml (maintainers, with network):
#   src/sbtc_ops/lock/runtime.lock  what `pip install --require-hashes` installs (and what
#                                   `sbtc-ops audit` checks the installation against)
#   requirements/test.lock          the same pins plus the test tools (scripts/test.sh)
#   sbom/sbtc-ops.cdx.json          CycloneDX SBOM of an environment installed from the lock
# Needs uv and cyclonedx-bom (pip install uv cyclonedx-bom). tests/test_lock.py fails when
# pyproject.toml, the locks and the SBOM disagree: run this after changing a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--generate-hashes --universal --python-version 3.11 --no-header --quiet)
uv pip compile "${common[@]}" pyproject.toml requirements/build.in -o src/sbtc_ops/lock/runtime.lock
# The test lock pins every shared package at the runtime lock's version.
uv pip compile "${common[@]}" --extra test --constraint src/sbtc_ops/lock/runtime.lock \
  pyproject.toml requirements/build.in -o requirements/test.lock

# The SBOM describes what the lock really installs: a throwaway venv built from it.
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --require-hashes -r src/sbtc_ops/lock/runtime.lock
"$venv/bin/pip" install -q --no-deps --no-build-isolation .
rm -rf build src/*.egg-info
cyclonedx-py environment --output-reproducible --of JSON --pyproject pyproject.toml \
  -o sbom/sbtc-ops.cdx.json "$venv/bin/python"
# Package-index links are where a component was fetched, not what it is: dropped so the SBOM
# names no registry host (the purl already says pkg:pypi/NAME@VERSION).
python3 - <<'PY'
import json
from pathlib import Path

path = Path("sbom/sbtc-ops.cdx.json")


def drop_index_links(node):
    if isinstance(node, dict):
        refs = node.get("externalReferences")
        if isinstance(refs, list):
            kept = [r for r in refs if "pypi" not in str(r.get("url", ""))]
            if kept:
                node["externalReferences"] = kept
            else:
                node.pop("externalReferences")
        for value in node.values():
            drop_index_links(value)
    elif isinstance(node, list):
        for value in node:
            drop_index_links(value)


bom = json.loads(path.read_text())
drop_index_links(bom)
path.write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n")
PY
