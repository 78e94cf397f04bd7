"""The OVMS module emulator: a flash image file is the device."""
