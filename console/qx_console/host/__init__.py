"""The real host, one module per concern; :class:`qx_console.linux.LinuxBackend` composes them.

| module | concern | what it runs / reads |
|---|---|---|
| ``context`` | :class:`HostContext`: the root prefix, the optional network namespace, ``cmd()``, the config store | — |
| ``network`` | addresses, NICs, writing/activating/reverting the management network, probes | ``ip``, ``ping``, ``getent``, networkd |
| ``accounts`` | root password, SSH access and its off-timer, qx-node's certificate and token | ``/etc/shadow``, ``ssh-keygen`` |
| ``systemd`` | unit states, restarts, the journal | ``systemctl``, ``systemd-run``, ``journalctl`` |
| ``updates`` | slots, channel, check/apply/rollback | ``qx-update`` (through :mod:`qx_console.clients`) |
| ``power`` | reboot / power off | ``systemctl`` |
| ``machine`` | what the machine reports: CPU, memory, uptime, hostname, the booted slot | ``/proc``, the ESP |

Invariants: every path is under ``HostContext.root`` (tests run against a temporary directory); every
command goes through ``HostContext.cmd`` (so :func:`qx_common.run.run`, and into the namespace for the
network ones); a concern reaches another only through the object it was given at construction (the
accounts concern starts and stops sshd through the systemd concern), never through the facade.
A new screen's host work goes into the one module of its concern, plus the interface
(:class:`qx_console.backend.HostBackend`), a one-line delegation in ``linux.py`` and the in-memory twin.
"""
