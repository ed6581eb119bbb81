"""Running the daemon as a system service: the service manager's notify protocol
(:mod:`monitor.service.notify`) and the systemd unit (:mod:`monitor.service.unit`)."""

__all__: list[str] = []
