"""The running node: one object owning the event bus, the libvirt connection and the services.

Call order: ``node = Node(settings, power=...)`` (tests pass an in-memory :class:`~qx_node.hostops.HostPower`;
the default runs systemctl) → ``node.start()`` (token, TLS, libvirt; never fails because
libvirtd is down — it reconnects; starts the charts' history sampler thread) → serve → ``node.close()``. Closing never stops a VM.
"""

from __future__ import annotations

from qx_node import auth, telemetry
from qx_node.clone import Cloner
from qx_node.devices import DeviceService
from qx_node.console import Tickets
from qx_node.events import EventBus
from qx_node.hostops import HostConfig, HostPower, SystemdPower
from qx_node.libvirt_conn import Libvirt
from qx_node.metrics import make_registry
from qx_node.networks import NetworkService
from qx_node.settings import Settings
from qx_node.snapshots import SnapshotService
from qx_node.storage import Storage
from qx_node.tasks import Tasks
from qx_node.telemetry import StatsHistory, StatsSampler
from qx_node.updates import UpdateService
from qx_node.vms import VmService


class Node:
    def __init__(self, settings: Settings, *, connect_wait: float = 5.0, power: HostPower | None = None) -> None:
        self.settings = settings
        self.connect_wait = connect_wait
        self.api_token = auth.ApiToken(settings.token_path)
        self.bus = EventBus()
        self.config = HostConfig(settings.state_dir)
        self.power: HostPower = power if power is not None else SystemdPower()
        self.tasks = Tasks(self.bus.publish)
        self.lv = Libvirt(settings.libvirt_uri, self.bus, connect_timeout=settings.libvirt_connect_timeout)
        self.storage = Storage(self.lv, settings.pool_dir, settings.pool_name)
        self.vms = VmService(self.lv, self.storage, settings.virt_type, kvm_usable=lambda: telemetry.kvm_usable(
            settings.kvm_device, settings.proc_cpuinfo), config=self.config)
        self.snapshots = SnapshotService(self.vms)
        self.cloner = Cloner(self.vms, self.tasks)
        self.devices = DeviceService(self.vms)
        self.networks = NetworkService(self.lv, settings.net_dir, settings.vlan_config, settings.host_vlan_cmd)
        self.tickets = Tickets()
        self.sampler = StatsSampler()
        self.history = StatsHistory(settings.history_interval, publish=self.bus.publish)
        self.updates = UpdateService(settings.update_cmd)
        self.registry = make_registry(self.lv, self.bus)
        self.lv.on_connect(self.storage.ensure_pool)
        self.lv.on_connect(self.vms.sweep_crashed)
        self.lv.on_lifecycle(self.vms.on_lifecycle)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.history.start()
            self.lv.start(self.connect_wait)

    def close(self) -> None:
        if self._started:
            self.history.stop()
            self.lv.close()
            self.bus.close()
            self._started = False

    @property
    def token(self) -> str:
        """The API token now (it changes when rotated: POST /v1/host/api-token/rotate)."""
        return self.api_token.value

    def libvirt_version(self) -> str | None:
        """libvirtd's version (read once per connection), None while not connected."""
        return self.lv.version if self.lv.connected else None
