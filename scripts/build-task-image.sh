#!/usr/bin/env bash
# Builds the default task image, citadel/task-executor:latest, without any network: a rootfs of
# Debian's static busybox (busybox-static, /bin/busybox) with every applet linked in /bin, an
# /etc/passwd and /etc/group naming the unprivileged user `task` (uid/gid 65534) and an empty
# /tmp, imported with `docker import` (no registry, no base image, no builder needed).
# Idempotent: does nothing when the image exists, unless --force.
# Usage: scripts/build-task-image.sh [--force]
# Env: CITADEL_TASK_IMAGE (default citadel/task-executor:latest), BUSYBOX (default /bin/busybox).
set -euo pipefail

image=${CITADEL_TASK_IMAGE:-citadel/task-executor:latest}
busybox=${BUSYBOX:-/bin/busybox}
force=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    *)
      echo "build-task-image: unknown argument: $arg (usage: $0 [--force])" >&2
      exit 2
      ;;
  esac
done

if ((force == 0)) && docker image inspect "$image" >/dev/null 2>&1; then
  echo "build-task-image: $image exists (use --force to rebuild)"
  exit 0
fi

if [[ ! -x $busybox ]]; then
  echo "build-task-image: $busybox not found: install Debian's busybox-static" >&2
  exit 1
fi
# A dynamically linked busybox would need a libc the image does not have.
interpreter=$(LC_ALL=C readelf -l "$busybox" 2>/dev/null | grep -i 'program interpreter' || true)
if [[ -n $interpreter ]] || ! "$busybox" --list >/dev/null 2>&1; then
  echo "build-task-image: $busybox is not a static busybox (install busybox-static)" >&2
  exit 1
fi

previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)

root=$(mktemp -d -t citadel-task-image.XXXXXX)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root/bin" "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
task:x:65534:65534:task:/tmp:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
task:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

version=$("$busybox" 2>&1 | head -n 1 | awk '{print $2}' || true)

# Owned by root in the image whoever runs this, so `task` cannot change its own binaries.
tar --create --numeric-owner --owner=0 --group=0 -C "$root" . |
  docker import \
    --change 'LABEL org.citadel.image=task-executor' \
    --change 'ENV PATH=/bin' \
    --change 'USER 65534:65534' \
    --change 'WORKDIR /tmp' \
    --change 'CMD ["sh"]' \
    --message "citadel task executor (busybox ${version:-unknown})" \
    - "$image" >/dev/null

# A rebuild leaves the old image untagged; drop it unless a container still uses it.
current=$(docker image inspect --format '{{.Id}}' "$image")
if [[ -n $previous && $previous != "$current" ]]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi

echo "build-task-image: built $image"
