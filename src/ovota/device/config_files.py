"""OVMS's config files in a real /store: ``/store/ovms_config/<param>``, a line ``<instance><TAB><value>`` per
instance (O ``main/ovms_config.cpp`` LoadConfig / RewriteConfig, ovms-twin §6)."""

from __future__ import annotations

from ovota.device.fat_store import CONFIG_DIR, mount_store, names, resolve
from ovota.device.flash import Flash
from ovota.formats.partition_table import Partition

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


def load_params(flash: Flash, store: Partition) -> dict[str, dict[str, str]]:
    """Every param file in /store/ovms_config (none if the folder is missing)."""
    fs = mount_store(flash, store, writable=False)
    try:
        folder = resolve(fs, CONFIG_DIR)
        if not fs.isdir(folder):
            return {}
        params = {}
        for shown, raw in names(fs, folder).items():
            if fs.isfile(f"{folder}/{raw}"):  # a folder in there is not a param
                params[shown] = parse_config_file(fs.readbytes(f"{folder}/{raw}"))
        return params
    finally:
        fs.close()


def save_params(flash: Flash, store: Partition, changed: dict[str, dict[str, str]]) -> None:
    """Rewrite the files of the params that changed (OVMS writes a file when a config lock is released)."""
    fs = mount_store(flash, store, writable=True)
    try:
        if not fs.isdir(resolve(fs, CONFIG_DIR)):
            fs.makedir(CONFIG_DIR)  # OvmsConfig::mount creates it
        for param, instances in changed.items():
            fs.writebytes(resolve(fs, f"{CONFIG_DIR}/{param}"), config_file(instances))
    finally:
        fs.close()
