#!/usr/bin/env bash
# Checks of the deployment files that need neither a container engine nor a cluster (CI runs
# them from `make test`, through `make deploy-check`):
#
#   1. deploy/docker/Dockerfile through BuildKit's Dockerfile linter (the rules of
#      `docker build --check`) and the image rules (dockerfile-lint/);
#   2. deploy/compose/*.yaml loaded and validated as `docker compose config` does, plus the
#      compose rules (compose-check/);
#   3. deploy/helm/fhirbots: `helm lint --strict` and `helm template` with the default values and
#      with ci/external-services.yaml (external PostgreSQL and Strimzi Kafka, everything on); each
#      rendering decoded strictly into the Kubernetes API types and checked against the chart's
#      rules (manifest-check/).
#
# The checkers and Helm are built from the Go module proxy into deploy/checks/bin/ (git-ignored)
# and rebuilt only when their sources, go.sum or HELM_VERSION change; Go's module and build
# caches make a rebuild in a fresh clone quick once a machine has built them once.
#
#   deploy/checks/run.sh
set -euo pipefail

HELM_VERSION=v4.3.2
KUBE_VERSION=1.31.0 # the Kubernetes version Helm renders for (the chart needs 1.25+)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="$here/bin"
started=$SECONDS
step() { echo "deploy-check: $*" >&2; }

# The worker roles the CLI offers: every one must have a compose service and a Deployment.
fhirbots=${FHIRBOTS:-$root/.venv/bin/fhirbots}
roles=$("$fhirbots" worker --help | tr -d ' \n' | sed -n 's/^[^{]*{\([a-z,]*\)}.*/\1/p')
[ -n "$roles" ] || { step "cannot read the worker roles from '$fhirbots worker --help'"; exit 1; }
step "worker roles: $roles"

# Build what is missing or out of date, with the machine's Go (the Go toolchain's usual place
# when it is not on the PATH).
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null 2>&1 || { step "no Go toolchain: install Go 1.26 or newer"; exit 1; }
stamp=$(cat "$here/go.mod" "$here/go.sum" "$here"/*/*.go | sha256sum | cut -c1-16)-$HELM_VERSION-$(go env GOVERSION)
mkdir -p "$bin"
if [ "$(cat "$bin/.stamp" 2>/dev/null)" != "$stamp" ]; then
  step "building the checkers and Helm $HELM_VERSION (go $(go env GOVERSION))"
  build_started=$SECONDS
  (cd "$here" && go build -trimpath -buildvcs=false -o "$bin/" ./dockerfile-lint ./compose-check ./manifest-check)
  GOBIN="$bin" go install -trimpath "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  echo "$stamp" > "$bin/.stamp"
  step "built in $((SECONDS - build_started)) s"
fi

step "Dockerfile"
"$bin/dockerfile-lint" "$root/deploy/docker/Dockerfile"

step "compose files"
"$bin/compose-check" -roles "$roles" "$root/deploy/compose/compose.yaml"
"$bin/compose-check" -embedded "$root/deploy/compose/compose.embedded.yaml"

step "Helm chart"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" \
  HELM_DATA_HOME="$work/helm/data"
chart="$root/deploy/helm/fhirbots"
for values in default "$chart/ci/external-services.yaml"; do
  flags=()
  name=default
  if [ "$values" != default ]; then
    flags=(--values "$values")
    name=$(basename "$values" .yaml)
  fi
  step "helm lint and template ($name values)"
  "$bin/helm" lint --strict --kube-version "$KUBE_VERSION" "${flags[@]}" "$chart"
  "$bin/helm" template fhirbots "$chart" --namespace fhirbots --kube-version "$KUBE_VERSION" \
    "${flags[@]}" > "$work/$name.yaml"
  "$bin/manifest-check" -roles "$roles" "$work/$name.yaml"
done

step "all checks pass in $((SECONDS - started)) s"
