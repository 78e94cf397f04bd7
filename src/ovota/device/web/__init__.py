"""The module's web UI (the OVMS Firmware page)."""
