"""qx-node: the Quantix host daemon (VMs through libvirt, telemetry, hardware, health, HTTP API).

Contract for local clients (the console, qx-update's health gate, scripts on the host)
-------------------------------------------------------------------------------------
* URL: ``https://127.0.0.1:8443`` (JSON; OpenAPI at ``/openapi.json``; versioned routes under ``/v1``).
* TLS: self-signed; verify against ``/var/lib/quantix/node/tls/cert.pem`` (its SANs are
  ``127.0.0.1``, ``::1``, ``localhost`` and the hostname).
* Auth: ``Authorization: Bearer <token>``, token in ``/var/lib/quantix/node/api-token`` (mode 0600,
  root). Every route but ``GET /health`` answers 401 without it.
* ``GET /health`` (no auth): 200 when every component is ok, else 503; body
  ``{"status": "ok"|"degraded", "version": ..., "components": {"libvirt"|"data"|"console":
  {"ok": bool, "detail": str}}}``.
* ``GET /v1/host``: ``{"hostname", "version", "slot": "a"|"b"|null (from root=PARTLABEL=root-X on the
  kernel command line), "kvm": {"usable": bool, "reason": str}, "virtualization": "kvm"|"tcg",
  "cpu_model", "cpu_cores", "cpu_threads", "memory_bytes", "uptime_s", "libvirt", ...}``.
* ``GET /v1/hardware``: ``{"disks": [{"name", "path", "by_id": [/dev/disk/by-id/...], "size_bytes",
  "model", "serial", "rotational", "partitions": [{"name", "path", "number", "size_bytes", "fs_type",
  "label", "partlabel", "by_id"}], ...}], "nics": [...], "pci": [...], "iommu": bool}``.
* Stop: SIGTERM is a graceful stop (open streams get 3 s), exit 0; running VMs are untouched.
* Errors: JSON ``{"error": str, "field": str|null, "hint": str|null}``; 401, 404, 409, 413, 422,
  502/503 when libvirtd fails or is unreachable.

Modules: ``settings`` · ``node`` (wiring) · ``libvirt_conn`` (reconnecting connection, event thread) ·
``events`` (bus, SSE) · ``vmspec`` (validation) · ``domxml`` (ElementTree) · ``vms`` · ``storage`` ·
``telemetry`` · ``hardware`` · ``metrics`` · ``auth`` · ``tls`` · ``health`` · ``api`` (routers) ·
``bootcheck`` · ``cli``.
"""
