"""The fleet simulator: many light OVMS modules (no flash file each) against a real server."""
