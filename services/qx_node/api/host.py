"""Routes: /health (public), /v1/host, /v1/host/stats, /v1/host/metrics/history, /v1/hardware, /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from qx_common.version import product_version
from qx_node import hardware, health, metrics, telemetry
from qx_node.api.errors import SafeJSONResponse
from qx_node.node import Node

router = APIRouter()


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


HEALTH_CHECK_TIMEOUT = 3.0


async def _bounded(name: str, fn: Callable[..., health.ComponentHealth], *args: Any) -> health.ComponentHealth:
    """A check on a worker thread, abandoned (reported as failed) after HEALTH_CHECK_TIMEOUT s."""
    try:
        with anyio.fail_after(HEALTH_CHECK_TIMEOUT):
            return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
    except TimeoutError:
        return health.timed_out(name, HEALTH_CHECK_TIMEOUT)


@router.get("/health", tags=["health"], summary="Per-component health; 200 only when every component is ok",
            response_model=None)
async def get_health(request: Request) -> JSONResponse:
    node = _node(request)
    s = node.settings
    components = [
        health.check_libvirt_connection(s.libvirt_uri, node.lv.status()),  # no I/O
        *await asyncio.gather(_bounded("data", health.check_data, s.state_dir),
                              _bounded("console", health.check_console, s.console_ready_dir,
                                       s.console_unchecked_reason)),
    ]
    body = health.overall(components)
    body["version"] = product_version()
    return SafeJSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


@router.get("/v1/host", tags=["host"], summary="Host facts: version, running A/B slot, CPU, memory, KVM usability")
def get_host(request: Request) -> dict[str, Any]:
    node = _node(request)
    s = node.settings
    return telemetry.host_info(node.libvirt_version(), cmdline=s.proc_cmdline, cpuinfo=s.proc_cpuinfo,
                               kvm_device=s.kvm_device, by_partuuid=s.by_partuuid,
                               sys_class_block=s.sys_class_block)


@router.get("/v1/host/stats", tags=["host"], summary="Host CPU, memory, disk and network rates")
def get_host_stats(request: Request) -> dict[str, Any]:
    return _node(request).sampler.stats()


@router.get("/v1/hardware", tags=["host"],
            summary="Disks (by-id links, partitions), NICs and PCI devices with IOMMU groups")
def get_hardware() -> dict[str, Any]:
    return hardware.inventory()


@router.get("/metrics", tags=["metrics"], summary="Prometheus metrics (host and per VM)",
            response_class=Response)
def get_metrics(request: Request) -> Response:
    return Response(metrics.render(_node(request).registry), media_type=metrics.CONTENT_TYPE)


@router.get("/v1/host/metrics/history", tags=["host"],
            summary="The last hour of host rates kept in memory (one sample per interval_s), oldest first, as "
                    "columns: t (Unix time), cpu and mem (%), disk and net (bytes/s), load (1 min)")
def get_host_history(request: Request) -> dict[str, Any]:
    return _node(request).history.series()
