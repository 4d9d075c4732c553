"""qx-node: the Quantix host daemon (VMs through libvirt, telemetry, hardware, health, HTTP API)."""
