"""Outputs of the monitor beyond the embedded store: InfluxDB, MQTT, webhooks."""

__all__: list[str] = []
