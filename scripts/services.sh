#!/usr/bin/env bash
# Install, start and stop what the Docker tests need on this machine:
#   - a Docker engine (Debian's docker.io), started with no bridge, no
#     iptables, and a proxy on a closed loopback port, so that an accidental
#     pull fails here instead of reaching for a hub;
#   - a registry (Debian's docker-registry) on 127.0.0.1:5000;
#   - a base image made locally (busybox-static imported as a root
#     filesystem), since no image can be pulled: 127.0.0.1:5000/conveyor/busybox:1;
#   - a single-node Swarm on 127.0.0.1 (the ``swarm`` deploy target), without
#     its ``ingress`` overlay and ``docker_gwbridge`` bridge: the routing mesh
#     cannot work here (no IPVS, no iptables), services use host networking.
#
# Usage: scripts/services.sh install|start|stop|status|swarm
#   start  everything above (the swarm included);
#   swarm  the single-node swarm alone, on a running engine;
#   stop   leaves the swarm, stops the registry and the engine.
# Runs as root. State lives in $CONVEYOR_SERVICES_DIR (default /var/lib/conveyor-ci).
set -euo pipefail

STATE=${CONVEYOR_SERVICES_DIR:-/var/lib/conveyor-ci}
REGISTRY_ADDR=127.0.0.1:5000
BASE_IMAGE=$REGISTRY_ADDR/conveyor/busybox:1
CLOSED_PROXY=http://127.0.0.1:9

log() { echo "services: $*" >&2; }

install() {
  local need=()
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
  [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

wait_for() {  # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

start_docker() {
  if docker info >/dev/null 2>&1; then
    log "docker engine already running"
    return
  fi
  mkdir -p "$STATE"
  log "starting dockerd (no bridge, no iptables, pulls blocked)"
  HTTP_PROXY=$CLOSED_PROXY HTTPS_PROXY=$CLOSED_PROXY NO_PROXY=127.0.0.1,localhost,::1 \
    setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false \
      --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 &
  wait_for 60 docker info || { tail -20 "$STATE/dockerd.log" >&2; log "dockerd did not start"; exit 1; }
}

start_registry() {
  if curl_ok "http://$REGISTRY_ADDR/v2/"; then
    log "registry already serving on $REGISTRY_ADDR"
    return
  fi
  mkdir -p "$STATE/registry"
  cat >"$STATE/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
  log "starting docker-registry on $REGISTRY_ADDR"
  setsid nohup docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
  echo $! >"$STATE/registry.pid"
  wait_for 30 curl_ok "http://$REGISTRY_ADDR/v2/" \
    || { tail -20 "$STATE/registry.log" >&2; log "registry did not start"; exit 1; }
}

curl_ok() {
  python3 - "$1" 2>/dev/null <<'EOF'
import sys, urllib.request
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
}

base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  log "making the base image $BASE_IMAGE from busybox-static"
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  docker push "$BASE_IMAGE" >/dev/null
}

swarm_state() {
  docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown
}

start_swarm() {
  if [ "$(swarm_state)" = active ]; then
    log "swarm already active"
  else
    log "initialising a single-node swarm on 127.0.0.1"
    docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
  fi
  remove_swarm_networks
}

# Swarm init makes the ingress overlay, and the ingress sandbox then makes the
# docker_gwbridge bridge (on a private range) about half a second later; the
# bridge can go only once ingress is gone. Loop until neither has been seen
# for a second.
remove_swarm_networks() {
  local deadline=$((SECONDS + 30)) quiet=0
  while [ $quiet -lt 5 ]; do
    if docker network inspect ingress >/dev/null 2>&1; then
      # the CLI asks before removing the routing mesh
      echo y | docker network rm ingress >/dev/null 2>&1 || true
      quiet=0
    elif docker network inspect docker_gwbridge >/dev/null 2>&1; then
      docker network rm docker_gwbridge >/dev/null 2>&1 || true
      quiet=0
    else
      quiet=$((quiet + 1))
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "the swarm's ingress or docker_gwbridge network cannot be removed"
      exit 1
    fi
    sleep 0.2
  done
}

stop_swarm() {
  if [ "$(swarm_state)" = active ]; then
    log "leaving the swarm"
    docker swarm leave --force >/dev/null 2>&1 || true
  fi
  docker network rm docker_gwbridge >/dev/null 2>&1 || true
}

stop() {
  if docker info >/dev/null 2>&1; then
    stop_swarm
  fi
  if [ -f "$STATE/registry.pid" ]; then
    kill "$(cat "$STATE/registry.pid")" 2>/dev/null || true
    rm -f "$STATE/registry.pid"
  fi
  if [ -f "$STATE/dockerd.pid" ]; then
    kill "$(cat "$STATE/dockerd.pid")" 2>/dev/null || true
    wait_for 30 sh -c "! kill -0 $(cat "$STATE/dockerd.pid" 2>/dev/null || echo 0)" || true
  fi
}

case "${1:-}" in
  install) install ;;
  start)
    install; start_docker; start_registry; base_image; start_swarm
    log "ready: engine, registry $REGISTRY_ADDR, $BASE_IMAGE, single-node swarm"
    ;;
  swarm) start_swarm ;;
  stop) stop ;;
  status)
    docker info --format '{{.ServerVersion}}' && curl_ok "http://$REGISTRY_ADDR/v2/" && echo "registry ok"
    echo "swarm $(swarm_state)"
    ;;
  *) echo "usage: $0 install|start|stop|status|swarm" >&2; exit 2 ;;
esac
