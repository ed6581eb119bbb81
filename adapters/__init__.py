"""Protocol adapters: each turns one machine's controller into a stream of observations.

Adapters know protocols (OPC UA, MTConnect) and nothing about parts or statistics.
"""

__all__: list[str] = []
