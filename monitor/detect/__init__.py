"""Drift detectors: small pure classes (update in, result out), no I/O, no clock, no asyncio."""
