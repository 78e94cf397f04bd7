"""The OVMS# console: the command tree and OVMS's exact output strings, one module per command group."""
