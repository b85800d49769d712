"""`hardway lab`: real Linux machines (systemd-nspawn, own systemd, sshd and network stack) on
this host, one per node of cluster.yaml, for trying hardway and for its end-to-end tests.

    import hardway.lab as lab
    lab.up("mylab", progress=print)      # build/copy/boot; idempotent
    lab.status("mylab")                  # machines, addresses, running?, SSH answers?
    lab.run("mylab", "worker-0", "hostname")
    lab.stop("mylab", "worker-0"); lab.start("mylab", "worker-0")
    lab.down("mylab")                    # nothing of the lab left running on the host
    lab.destroy("mylab")                 # ... and the machines' roots deleted

Facts this rests on: shared/design/LAB.md. Module map: image.py (the cached Debian image),
machine.py (a machine's files, boot, stop), cgroups.py (per-machine cgroups), host.py (bridge,
kernel settings, firewall check, preconditions), sshkeys.py (keys, known_hosts, cluster.yaml's
ssh:), state.py (DIR/lab/state.json), core.py (the verbs).
"""

from __future__ import annotations

from .core import (
    DownReport,
    MachineStatus,
    StatusReport,
    UpReport,
    destroy,
    down,
    machine_pids,
    run,
    ssh_argv,
    start,
    status,
    stop,
    up,
)

__all__ = ["DownReport", "MachineStatus", "StatusReport", "UpReport", "destroy", "down",
           "machine_pids", "run", "ssh_argv", "start", "status", "stop", "up"]
