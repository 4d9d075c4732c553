"""qx-node: the Quantix host daemon (VMs through libvirt, telemetry, hardware, health, HTTP API).

Contract for local clients (the console, qx-update's health gate, scripts on the host)
-------------------------------------------------------------------------------------
* URL: ``https://127.0.0.1:8443`` (JSON; OpenAPI at ``/openapi.json``; versioned routes under ``/v1``).
* TLS: self-signed; verify against ``/var/lib/quantix/node/tls/cert.pem`` (its SANs are
  ``127.0.0.1``, ``::1``, ``localhost`` and the hostname).
* Auth: ``Authorization: Bearer <token>``, token in ``/var/lib/quantix/node/api-token`` (mode 0600,
  root). Every route but ``GET /health`` answers 401 without it, WebSocket handshakes included
  (a console WebSocket also takes its one-time ticket instead).
* Web client (browsers): ``GET /`` and ``/ui/...`` (public files, strict CSP); ``POST /ui/login``
  ``{"password"}`` (root's, as the console checks it; refused in lockdown mode) or ``{"token"}`` gives the
  session cookie ``__Host-qx_session``, with which every route answers as with the token — state-changing
  requests only with ``X-CSRF-Token`` (``api.ui``, ``websession``; ``web/README.md``).
* ``GET /health`` (no auth): 200 when every component is ok, else 503; body
  ``{"status": "ok"|"degraded", "version": ..., "components": {"libvirt"|"data"|"console":
  {"ok": bool, "detail": str}}}``. Each check is bounded (3 s); the libvirt detail is the latest
  connection attempt's (a libvirtd that accepts and never answers is reported after 10 s). The
  console is checked on a Quantix OS host (os-release ``IMAGE_ID=quantix-os``) or with
  ``--console-ready-dir``; elsewhere (the README's development command) it is "not checked".
* ``GET /v1/host``: ``{"hostname", "version", "slot": "a"|"b"|null (from root=PARTLABEL=root-X on the
  kernel command line, or for a verity boot the GPT name of the partition its roothash= names),
  "kvm": {"usable": bool, "reason": str}, "virtualization": "kvm"|"tcg",
  "cpu_model", "cpu_cores", "cpu_threads", "memory_bytes", "uptime_s", "libvirt", ...}``.
* ``GET /v1/hardware``: ``{"disks": [{"name", "path", "by_id": [/dev/disk/by-id/...], "size_bytes",
  "model", "serial", "rotational", "partitions": [{"name", "path", "number", "size_bytes", "fs_type",
  "label", "partlabel", "by_id"}], ...}], "nics": [...], "pci": [...], "iommu": bool}``.
* VMs (``/v1/vms``): create, list, get, ``PATCH`` (vcpus, memory_mib, name, description, tags,
  autostart; ``applied`` says "now" or "next_start" per field), delete (``remove_disks``, ``force``;
  all checks before any change), start/shutdown/stop/reboot/pause/resume, stats, console address,
  snapshots (``/v1/vms/{name}/snapshots``: tree, create with or without memory, revert, delete; the VM
  is busy — 409 for another snapshot, a revert, an edit or a delete — while one is taken),
  consoles (``POST /v1/vms/{name}/console?kind=vnc|serial`` gives a one-time ticket valid 30 s for
  the WebSocket ``/v1/vms/{name}/console/{kind}?ticket=...``: VNC for noVNC, or the serial port;
  proxied to loopback only).
  devices (``POST .../disks`` new or existing volume, ``DELETE .../disks/{dev}?remove_volume=``,
  ``POST .../nics`` bridge or network, ``DELETE .../nics/{mac}``, ``PUT|DELETE .../cdrom`` insert or
  eject an ISO; the definition always, the running VM where possible: ``applied`` says which),
  ``POST /v1/vms/{name}/clone`` (shut-off VMs: full sparse copy of the disks, new UUID and MACs).
* Long operations — create (``POST /v1/vms``), clone, snapshot (``POST .../snapshots``) — one contract
  (``api.longops``): bad input is a 422 and what cannot be done a 404/409, at once and without a task;
  otherwise **202 Accepted** at once, ``Location: /v1/tasks/{id}``, the body the task; it ends
  ``succeeded`` (``result``: the VM or snapshot) or ``failed``/``cancelled`` (``error``). ``?wait=true``
  (scripts): the same task, answered when it ends — 201 with the result and ``Location`` the new object,
  or the task's error status and body; ``X-Qx-Task`` names the task. An ISO upload answers 201 once its
  body is in (it is the data), and is a task meanwhile for other clients.
* Networks (``/v1/networks``): ``{"host": [bridges and VLAN interfaces], "networks": [libvirt
  networks]}``; create ``{"name", "bridge"}`` (VMs join a host bridge), ``{"name", "interface"}``
  (macvtap on a NIC or VLAN interface) or ``{"name", "vlan"}`` (a VLAN of the management adapter: the
  host configuration gets VLAN device ``qxvlanN`` and bridge ``qxbrN`` through the console's program
  ``qx_console.vmnet`` — networkd files, safe apply — and the network is put on that bridge; one network
  per VLAN; deleting it takes the VLAN off the host), started and autostarted; delete refused while a
  VM's NIC uses it. VM NICs take ``bridge`` or ``network``.
* Tasks (``/v1/tasks``, newest first; ``GET /v1/tasks/{id}``; ``POST /v1/tasks/{id}/cancel`` for
  clone, create, snapshot and ISO upload; a snapshot with memory reports the MiB of memory saved): ``{"id", "kind", "target", "state": running|succeeded|failed|cancelled,
  "progress" (percent), "result", "error": {"status", "error", "field", "hint"}, ...}``; ``task``
  events on ``/v1/events`` (start, progress, end). In memory only: running ones (at most 16 at once,
  then 409) plus the last 100 finished. An ISO upload is a task while its body streams (``X-Qx-Task`` header on the answer).
* Capacity: a start (or create/clone with start) whose memory does not fit — host memory minus a
  reserve (5 %, at most 1 GiB) minus what running VMs are given — and new disks whose full size does
  not fit in the pool are 409 naming the field, with needed and free; ``GET /v1/host/capacity``;
  ``PATCH /v1/host/settings`` (``overcommit_memory``, ``overcommit_disk``, ``memory_reserve_mib``;
  kept in ``<state>/host-settings.json``).
* Host: ``POST /v1/host/maintenance {"enabled", "stop_vms": none|shutdown|stop}`` (kept across
  restarts; while on, no VM starts, restart-on-crash included); ``POST /v1/host/reboot|shutdown``
  (``{"force"}``): 202, done a second later by systemctl; 409 while VMs run outside maintenance.
* Updates (``/v1/host/updates``, module ``updates``): the host's ``qx-update --json`` run as a command and
  read through ``qx_update``'s public models — ``GET`` (status, plus ``available``, ``awaiting_reboot``,
  ``applying``), ``POST .../check``, ``POST .../apply`` (202, an ``update`` task following qx-update's
  progress lines; no reboot), ``POST .../rollback``, ``PUT .../channel {"channel"}``; qx-update's refusals
  are 409, a host not set up for updates 503, the update server's failures 502, each with qx-update's
  message and hint; 423 in lockdown. ``GET /v1/host/metrics/history``: the last hour of host rates, one
  sample per 5 s in a fixed 34,560-byte ring (``telemetry.StatsHistory``, the node's one background sampler).
  ``GET /v1/vms/{name}`` lists ``disk_devices`` (``dev``, ``path``, ``bus``, ``removed_at_next_start``).
  A volume is a disk of one VM only unless every VM declares it ``shared`` (raw volumes); volumes
  used as disk, cdrom, kernel or initrd cannot be deleted.
* Stop: SIGTERM is a graceful stop — event streams end at once, other open requests get up to 3 s
  — and exit 0 within about 5 s even when libvirtd hangs; running VMs are untouched.
* Errors: JSON ``{"error": str, "field": str|null, "hint": str|null}`` (also for WebSocket
  handshakes refused); 401, 404, 409, 413 (JSON bodies over 1 MiB, refused before reading), 422
  (including unknown or repeated query parameters, nesting deeper than 32, invalid Unicode,
  duplicate keys), 502/503 when libvirtd fails or is unreachable. A 500 is a bug (logged); the
  connection stays usable.

Modules: ``settings`` · ``node`` (wiring) · ``libvirt_conn`` (reconnecting connection, event thread) ·
``events`` (bus, SSE) · ``vmspec`` / ``vmedit`` (validation) · ``domxml`` (ElementTree) · ``vms`` ·
``snapshots`` · ``devices`` · ``networks`` · ``clone`` · ``tasks`` (``api.longops``: their routes' answer) · ``hostops`` (capacity, settings, maintenance, power) ·
``console`` (tickets, endpoints) · ``storage`` · ``telemetry`` · ``updates`` (qx-update) · ``hardware`` ·
``metrics`` · ``auth`` · ``websession`` (web sessions, CSRF, lockout) · ``tls`` · ``health`` · ``api`` (routers; ``api.guards``: last-resort
handler, body limit, query check; ``api.openapi``; ``api.console``: the WebSocket proxies; ``api.tasks``, ``api.hostctl``; ``api.ui``: the web client's files and sign-in) ·
``lockdown`` (lockdown mode: refuse configuration changes) · ``errors`` (the error tree) · ``app``
(the ASGI app factory) · ``bootcheck`` · ``cli`` · ``serve``.
"""
