#!/bin/sh
# hardway scripts/prereqs puts this in /usr/sbin/policy-rc.d while it installs packages (and
# only when no policy is there already), then removes it: a package installed for hardway's
# tests starts no service (Debian's etcd-server would start a default etcd). Stops, restarts
# and reloads of services already there go ahead. Interface: invoke-rc.d(8), policy-rc.d.
for arg in "$@"; do
  [ "$arg" = start ] && exit 101  # 101: action forbidden by policy
done
exit 0
