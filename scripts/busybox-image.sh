#!/bin/sh
# Builds a small busybox root filesystem from Debian's busybox-static and writes it as a tar
# archive, ready for `docker import` / `ctnet image import`:
#
#   scripts/busybox-image.sh [FILE|-]        (default: standard output)
#   scripts/busybox-image.sh | ctnet image import - busybox
#
# BUSYBOX=/path/to/busybox picks another static busybox binary.
set -eu

out=${1:--}
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
  echo "busybox-image.sh: $busybox not found: install Debian's busybox-static" >&2
  exit 1
fi
# A dynamically linked busybox would need its libraries inside the image.
if ! "$busybox" --list-full >/dev/null 2>&1; then
  echo "busybox-image.sh: $busybox cannot list its applets (--list-full)" >&2
  exit 1
fi
if [ "$out" = - ] && [ -t 1 ]; then
  echo "busybox-image.sh: refusing to write a tar archive to a terminal; give a file or a pipe" >&2
  exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/busybox-image.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM

mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
chmod 0755 "$root"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"

# The same layout `busybox --install -s` makes: one absolute symlink per applet.
"$busybox" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -s /bin/busybox "$root/$applet"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
# Mount points for the files the runtime bind-mounts over them.
: >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"

# Fixed owners, order and times, so the same busybox always gives the same archive (and digest).
set -- -C "$root" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -c .
if [ "$out" = - ]; then
  tar "$@"
else
  tar "$@" -f "$out"
fi
