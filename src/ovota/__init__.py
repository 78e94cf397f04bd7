"""ovota: over-the-air firmware updates for ESP32 fleets, byte-compatible with OVMS v3."""

__version__ = "0.1.0"
