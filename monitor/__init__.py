"""CNC process monitor for small-batch production.

Reads spindle, tool and probe data from machine controllers (OPC UA, MTConnect), ties every signal
to the part it belongs to, and flags drift in hole positions and dimensions while parts are still
in tolerance. See README.md for the picture and ``monitor --help`` for the commands.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
