#!/usr/bin/env bash
# Build both images of the Dockerfile: `serve` (the service) and `full` (the jobs), with cached
# layers; the stand-in base image first when the real one is not there (build_base_image.sh).
#
#   scripts/build_images.sh [TAG]        # TAG default servewatch:0.1.0 -> TAG and TAG-full
#
# Needs a running dockerd. Prints the build time and the size of each image.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-servewatch:0.1.0}
# Debian's docker.io client builds with BuildKit without the buildx plugin; a newer client on
# PATH (without buildx) would fall back to the legacy builder, which builds every stage.
if [ -z "${DOCKER:-}" ]; then
    if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER DOCKER_BUILDKIT=1

bash scripts/build_base_image.sh
start=$(date +%s)
# --network host: pip in the build reaches the package index as the host does, no bridge NAT.
"$DOCKER" build --network host --target full -t "$tag-full" . >/tmp/servewatch-build-full.log 2>&1 \
    || { tail -40 /tmp/servewatch-build-full.log; exit 1; }
"$DOCKER" build --network host --target serve -t "$tag" . >/tmp/servewatch-build-serve.log 2>&1 \
    || { tail -40 /tmp/servewatch-build-serve.log; exit 1; }
mb() { echo $(($("$DOCKER" image inspect -f '{{ .Size }}' "$1") / 1000000)); }
echo "built $tag ($(mb "$tag") MB) and $tag-full ($(mb "$tag-full") MB) in $(($(date +%s) - start)) s"
