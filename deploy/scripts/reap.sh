#!/usr/bin/env bash
# Kills local servers (redis-server, tansu) started by Waymark's local stack whose owner process
# has died (a crashed or killed test run), by the PIDs recorded in the stack's registry.
set -u
registry="${TMPDIR:-/tmp}/waymark-stack-registry"
[ -d "$registry" ] || exit 0
for file in "$registry"/*; do
  [ -f "$file" ] || continue
  child=$(basename "$file")
  owner=$(sed -n 1p "$file")
  exe=$(sed -n 2p "$file")
  if kill -0 "$owner" 2>/dev/null; then continue; fi
  if kill -0 "$child" 2>/dev/null && tr '\0' ' ' < "/proc/$child/cmdline" 2>/dev/null | grep -q -- "$exe"; then
    kill -CONT "$child" 2>/dev/null; kill -KILL "$child" 2>/dev/null
    echo "reaped orphaned $exe (pid $child)" >&2
  fi
  rm -f "$file"
done
exit 0
