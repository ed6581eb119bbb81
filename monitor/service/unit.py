"""The systemd unit that runs the daemon as a plant's IT expects a service to run.

One template, rendered two ways: for the conventional layout (shipped in the repository as
``deploy/systemd/cnc-monitor.service``; a test keeps it in step with this module) and, by
``monitor service -c SITE``, for one site file with the real paths of this installation.

What the unit promises, and why:

- ``Type=notify`` and ``WatchdogSec=``: systemd waits for the daemon's ``READY=1`` and restarts
  it when its event loop stops pinging (:mod:`monitor.service.notify`); ``Restart=on-failure``
  also restarts it after a crash, but not after a clean stop.
- An unprivileged system user (``sysusers.d`` entry shipped beside the unit), a state directory
  ``/var/lib/<state_dir>`` that systemd creates and hands to that user, and ``UMask=0027``.
- Sandboxing that leaves the daemon what it needs and nothing else: the whole file system read-only
  but the state directory and the folders the site file writes to (store, spools), no
  capabilities, no new privileges, private /tmp and devices, kernel and cgroup knobs protected,
  system calls limited to ``@system-service``; the address families it uses stay open (``AF_INET``/
  ``AF_INET6`` for controllers, sinks and the dashboard, ``AF_UNIX`` for the notify socket, the
  journal and an MQTT broker on a unix socket). ``MemoryDenyWriteExecute=`` is *not* set: cffi
  (used by cryptography for OPC UA security) allocates executable trampolines and would crash.
- Logs go to the journal (stdout/stderr); the daemon prefixes each line with its syslog priority
  there (:mod:`monitor.logs`), and ``log_format: json`` in the site file makes them JSON.
- ``ExecReload=`` sends SIGHUP (systemd's reload convention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from monitor.config import Site

__all__ = [
    "DEFAULT_LAYOUT",
    "ServiceLayout",
    "check_unit_name",
    "install_service",
    "layout_for_site",
    "render_sysusers",
    "render_unit",
]


@dataclass(frozen=True, slots=True)
class ServiceLayout:
    """Everything the unit names: where the monitor and its files live, and who runs it."""

    executable: PurePosixPath
    """The ``monitor`` console script (in the virtual environment ``scripts/install.sh`` made)."""
    site_file: PurePosixPath
    site_name: str = ""
    """The site's name (``site:`` in the site file), shown in the unit's description."""
    name: str = "cnc-monitor"
    """Unit name without ``.service``; also the user, group and state directory by default."""
    user: str = "cnc-monitor"
    state_dir: str = "cnc-monitor"
    """Folder under /var/lib that systemd creates for the user (``StateDirectory=``)."""
    writable: tuple[PurePosixPath, ...] = ()
    """Folders outside the state directory the daemon writes to (store, spools)."""
    environment_file: PurePosixPath = field(default=PurePosixPath("/etc/cnc-monitor/monitor.env"))
    """Optional file with the secrets the site file names (``INFLUX_TOKEN=...``), readable by root only."""
    watchdog_s: int = 30
    home_read_only: bool = False
    """True when the monitor or its site file lives under /home or /root (then ProtectHome=read-only)."""
    notes: tuple[str, ...] = field(default=())
    """Things the person installing should know (printed by ``monitor service``)."""

    @property
    def state_path(self) -> PurePosixPath:
        return PurePosixPath("/var/lib") / self.state_dir


DEFAULT_LAYOUT = ServiceLayout(
    executable=PurePosixPath("/opt/cnc-monitor/.venv/bin/monitor"),
    site_file=PurePosixPath("/etc/cnc-monitor/site.yaml"),
)
"""The layout the shipped unit is written for: checkout in /opt/cnc-monitor, site file in
/etc/cnc-monitor, store in /var/lib/cnc-monitor (see docs/service.md)."""


_NAME = re.compile(r"^[a-z_][a-z0-9_\-]{0,31}$")


def check_unit_name(name: str) -> str:
    """A unit name that is also a valid system user and folder name (several cells on one PC
    run as ``cnc-monitor-cell3``, ``cnc-monitor-cell4``...).

    >>> check_unit_name("cnc-monitor-cell3")
    'cnc-monitor-cell3'
    >>> check_unit_name("Cell 3")
    Traceback (most recent call last):
    ...
    ValueError: unit name 'Cell 3': use lower-case letters, digits, - and _ (at most 32, not starting with a digit)
    """
    if not _NAME.match(name):
        raise ValueError(f"unit name {name!r}: use lower-case letters, digits, - and _ (at most 32, not starting with a digit)")
    return name


def layout_for_site(
    site: Site, *, executable: Path, user: str | None = None, name: str | None = None, watchdog_s: int = 30
) -> ServiceLayout:
    """The layout for one loaded site file: its store folder and spool folders become writable."""
    unit = check_unit_name(name or DEFAULT_LAYOUT.name)
    state = PurePosixPath("/var/lib") / unit
    writable: list[PurePosixPath] = []
    notes: list[str] = []
    for folder in _written_folders(site):
        path = PurePosixPath(folder)
        if path != state and state not in path.parents and path not in writable:
            writable.append(path)
    if writable:
        notes.append(
            "the daemon writes outside its state directory "
            f"{state}: {', '.join(map(str, writable))}; these folders must exist and belong to user {user or unit}"
            f" (or move the store to {state}/)"
        )
    exe, site_file = PurePosixPath(executable.absolute()), PurePosixPath(site.path.absolute())
    home = any(p.parts[:2] in (("/", "home"), ("/", "root")) for p in (exe, site_file))
    if home:
        notes.append("the monitor or the site file lives under /home or /root: the unit reads them with ProtectHome=read-only")
    return ServiceLayout(
        executable=exe,
        site_file=site_file,
        site_name=site.config.site,
        name=unit,
        user=user or unit,
        state_dir=unit,
        writable=tuple(writable),
        environment_file=PurePosixPath("/etc") / unit / "monitor.env",
        watchdog_s=watchdog_s,
        home_read_only=home,
        notes=tuple(notes),
    )


def _written_folders(site: Site) -> list[Path]:
    """The folders the daemon creates files in: the store's (with its WAL and runtime file) and spools."""
    base = site.path.parent.absolute()
    folders = [site.store_path.absolute().parent]
    sinks = site.config.sinks
    spools = [sinks.influx.spool_dir if sinks.influx else None, sinks.mqtt.spool_dir if sinks.mqtt else None]
    spools += [hook.spool_dir for hook in sinks.webhooks]
    for spool in spools:
        if spool is not None:
            folders.append(spool if spool.is_absolute() else base / spool)
    return folders


def render_unit(layout: ServiceLayout) -> str:
    """The unit file's text."""
    rw = "".join(f"ReadWritePaths=-{p}\n" for p in layout.writable)
    description = "CNC process monitor" + (f" ({layout.site_name})" if layout.site_name else "")
    return f"""\
# systemd unit for the CNC process monitor watching the machines of {layout.site_file}.
# Written by `monitor service`; see docs/service.md. Secrets (INFLUX_TOKEN=..., DASHBOARD_TOKEN=...)
# go in {layout.environment_file} (mode 0600), never in this file or the site file.
[Unit]
Description={description}
Documentation=file://{layout.executable.parent.parent.parent}/docs/service.md
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={layout.executable} run -c {layout.site_file}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
WatchdogSec={layout.watchdog_s}s
TimeoutStartSec=120s
TimeoutStopSec=60s
EnvironmentFile=-{layout.environment_file}
Environment=PYTHONUNBUFFERED=1
Environment=NUMBA_CACHE_DIR=/var/lib/{layout.state_dir}/numba-cache
SyslogIdentifier={layout.name}

# an unprivileged user, and the one folder that is its own
User={layout.user}
Group={layout.user}
StateDirectory={layout.state_dir}
StateDirectoryMode=0750
WorkingDirectory=/var/lib/{layout.state_dir}
UMask=0027

# sandbox: read-only system, no privileges; network and unix sockets stay open
ProtectSystem=strict
{rw}ProtectHome={"read-only" if layout.home_read_only else "yes"}
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def render_sysusers(layout: ServiceLayout) -> str:
    """A sysusers.d(5) entry that creates the service's system user (``systemd-sysusers`` applies it).

    >>> print(render_sysusers(DEFAULT_LAYOUT), end="")
    # the system user of the CNC process monitor (see docs/service.md)
    u cnc-monitor - "CNC process monitor" /var/lib/cnc-monitor
    """
    return (
        "# the system user of the CNC process monitor (see docs/service.md)\n"
        f'u {layout.user} - "CNC process monitor" {layout.state_path}\n'
    )


def install_service(layout: ServiceLayout, *, root: Path = Path("/")) -> list[Path]:
    """Write the unit and its sysusers.d entry under ``root`` (``/`` or a package staging folder).

    Returns the files written. Starting it is left to the person installing:
    ``systemd-sysusers && systemctl daemon-reload && systemctl enable --now <name>``."""
    unit = root / "etc/systemd/system" / f"{layout.name}.service"
    users = root / "etc/sysusers.d" / f"{layout.name}.conf"
    for path, text in ((unit, render_unit(layout)), (users, render_sysusers(layout))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return [unit, users]
