"""OPC UA: the client adapter, discovery, and the simulated CNC server (OPC 40501/40502 shaped)."""

__all__: list[str] = []
