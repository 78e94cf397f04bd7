"""OVMS's config files in /store: ``/store/ovms_config/<param>``, a line ``<instance><TAB><value>`` per
instance (O ``main/ovms_config.cpp`` LoadConfig / RewriteConfig, ovms-twin §6)."""

from __future__ import annotations

from ovota.device.fat_store import VolumeError
from ovota.device.store_volume import StoreVolume

CONFIG_DIR = "/ovms_config"

MAX_LINE = 2500  # OVMS_MAXVALSIZE: fgets' buffer


def parse_config_file(data: bytes) -> dict[str, str]:
    """LoadConfig: each line (fgets, at most 2,500 bytes) loses its last character, whatever it is; the rest
    splits at the first TAB, else at the first space; a line with neither is ignored."""
    instances: dict[str, str] = {}
    text = data.decode("utf-8", "replace")
    start = 0
    while start < len(text):
        end = text.find("\n", start, start + MAX_LINE - 1)
        end = min(len(text), start + MAX_LINE - 1) if end < 0 else end + 1
        line = text[start:end][:-1]
        start = end
        sep = "\t" if "\t" in line else " "
        if sep in line:
            instance, value = line.split(sep, 1)
            instances[instance] = value
    return instances


def config_file(instances: dict[str, str]) -> bytes:
    """RewriteConfig: the whole file, one line per instance in byte order, no header."""
    ordered = sorted(instances.items(), key=lambda kv: kv[0].encode())
    return "".join(f"{instance}\t{value}\n" for instance, value in ordered).encode()


def load_params(volume: StoreVolume) -> dict[str, dict[str, str]]:
    """Every param file in /store/ovms_config that can be read (none if the folder is missing or unreadable,
    or the volume is not mounted): LoadConfig skips what it cannot open, and the module boots."""
    params = {}
    try:
        entries = (volume.listdir(CONFIG_DIR) or []) if volume.mounted else []
    except VolumeError:
        return {}
    for entry in entries:
        if not entry.is_dir:  # a folder in there is not a param
            try:
                params[entry.name] = parse_config_file(volume.read(f"{CONFIG_DIR}/{entry.name}") or b"")
            except VolumeError:
                continue
    return params


def save_params(volume: StoreVolume, changed: dict[str, dict[str, str]]) -> None:
    """Rewrite the files of the params that changed (OVMS writes a file when a config lock is released)."""
    with volume.lock:
        for param, instances in changed.items():
            volume.write(f"{CONFIG_DIR}/{param}", config_file(instances))
