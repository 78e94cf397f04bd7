"""/store as OVMS's files, the partition-update log writer, and the copy of /store into /store2.

OVMS keeps /store on a FAT filesystem. The emulator keeps the config params as one crash-safe record
(records.py) and the partition-update log as an append-only list of lines, so for the migration it presents
them as the files OVMS would have: ``/store/ovms_config/<param>`` for each param that has instances (in byte
order, one ``<instance>\\t<value>`` line per instance, as OVMS's RewriteConfig writes them) and
``/store/partition-update.log``. :func:`copy_store` prints what ``ovms_partition_table_copy_store`` prints for
those files, and copies the records.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ovota.device.flash import SECTOR_SIZE, Flash
from ovota.device.records import RecordBanks, encode_json
from ovota.device.store import BANK_SIZE, CONFIG_MAGIC
from ovota.formats.partition_table import DATA, Partition

STORE2 = Partition("store2", DATA, 0x81, 0xE10000, 0x1F0000)
SRC, DST = "/store", "/store2"
CONFIG_DIR = "ovms_config"
LOG_NAME = "partition-update.log"
LOG_PATH = f"{SRC}/{LOG_NAME}"
STORE2_LOG = f"{DST}/{LOG_NAME}"

Params = dict[str, dict[str, str]]


# -- config files -------------------------------------------------------------------------------------------


def config_banks(flash: Flash, part: Partition) -> RecordBanks:
    return RecordBanks(flash, part.offset, BANK_SIZE, CONFIG_MAGIC)


def read_config(flash: Flash, part: Partition) -> Params | None:
    loaded = config_banks(flash, part).load()
    return json.loads(loaded[1]) if loaded else None


def config_files(params: Params) -> dict[str, bytes]:
    """``ovms_config/<param>`` file contents, for the params that have instances, in byte order."""
    return {
        param: "".join(f"{k}\t{v}\n" for k, v in sorted(instances.items())).encode()
        for param, instances in sorted(params.items())
        if instances
    }


# -- the log file -------------------------------------------------------------------------------------------
# Each line is appended with one flash program, as a file append. The log has two banks after the config's;
# the one whose header (magic, generation, CRC) is valid with the higher generation holds it: records
# (u16 length, CRC-32, UTF-8 text) up to an erased length field. A cut while appending leaves a record that
# fails its CRC: reading stops there, and the next append first rewrites the log into the other bank (records,
# then the header as the commit), as it does when a bank is full (dropping the oldest lines then).

LOG_MAGIC = b"OVLA"
LOG_OFFSET = 2 * BANK_SIZE
LOG_HEADER = struct.Struct("<4sII")
LOG_RECORD = struct.Struct("<HI")
LOG_DATA = 16  # records start here in a bank
BLANK = b"\xff" * SECTOR_SIZE


@dataclass(frozen=True)
class _Log:
    lines: list[str]
    bank: int  # flash offset of the bank holding it
    generation: int
    end: int  # flash offset of the next record
    clean: bool  # the records end at erased flash, not at a torn record


def _log_bank(part: Partition, index: int) -> int:
    return part.offset + LOG_OFFSET + index * BANK_SIZE


def _header(generation: int) -> bytes:
    return LOG_HEADER.pack(LOG_MAGIC, generation, zlib.crc32(LOG_MAGIC + generation.to_bytes(4, "little")))


def _scan_log(flash: Flash, part: Partition) -> _Log | None:
    found = []
    for index in (0, 1):
        bank = _log_bank(part, index)
        raw = flash.read(bank, LOG_HEADER.size)
        generation = LOG_HEADER.unpack(raw)[1]
        if raw == _header(generation):
            found.append((generation, bank))
    if not found:
        return None
    generation, bank = max(found)
    data = flash.read(bank, BANK_SIZE)
    lines: list[str] = []
    pos = LOG_DATA
    while pos + LOG_RECORD.size <= BANK_SIZE:
        length, crc = LOG_RECORD.unpack_from(data, pos)
        if length == 0xFFFF:
            return _Log(lines, bank, generation, bank + pos, True)
        text = data[pos + LOG_RECORD.size : pos + LOG_RECORD.size + length]
        if len(text) != length or zlib.crc32(text) != crc:
            break
        lines.append(text.decode("utf-8", "replace"))
        pos += LOG_RECORD.size + length
    return _Log(lines, bank, generation, bank + pos, False)


def _records(lines: list[str]) -> bytes:
    out = bytearray()
    for line in lines:
        text = line.encode()[:0xFFFE]
        out += LOG_RECORD.pack(len(text), zlib.crc32(text)) + text
    return bytes(out)


def load_log(flash: Flash, part: Partition) -> list[str] | None:
    """The lines of partition-update.log in ``part``; None when the file does not exist."""
    log = _scan_log(flash, part)
    return None if log is None else log.lines


def write_log(flash: Flash, part: Partition, lines: list[str]) -> None:
    """Write the whole log into the bank not in use, then commit it with its header."""
    log = _scan_log(flash, part)
    bank = _log_bank(part, 1 if log is not None and log.bank == _log_bank(part, 0) else 0)
    body = _records(lines)
    while LOG_DATA + len(body) > BANK_SIZE // 2:  # leave room to append
        lines = lines[len(lines) // 4 + 1 :]
        body = _records(lines)
    flash.erase(bank, -(-(LOG_DATA + len(body)) // SECTOR_SIZE) * SECTOR_SIZE)
    if body:
        flash.program(bank + LOG_DATA, body)
    flash.program(bank, _header((log.generation if log else 0) + 1))


def append_log(flash: Flash, part: Partition, line: str, known: _Log | None = None) -> _Log:
    """Append one line: a single program operation while the bank has room. ``known``: the log as the previous
    append left it (saves reading it again). Returns the log as it is now."""
    log = known or _scan_log(flash, part)
    record = _records([line])
    if log is None or not log.clean or not _make_room(flash, log, len(record)):
        write_log(flash, part, (log.lines if log else []) + [line])
        new = _scan_log(flash, part)
        assert new is not None
        return new
    flash.program(log.end, record)
    return _Log([*log.lines, line], log.bank, log.generation, log.end + len(record), True)


def _make_room(flash: Flash, log: _Log, size: int) -> bool:
    """Whether ``size`` bytes can be programmed at the log's end: the rest of its sector must be erased; the
    sectors after it hold nothing of the log and are erased if they are not blank."""
    end = log.end + size
    if end > log.bank + BANK_SIZE:
        return False
    boundary = min(end, -(-log.end // SECTOR_SIZE) * SECTOR_SIZE)
    if flash.read(log.end, boundary - log.end) != BLANK[: boundary - log.end]:
        return False
    for sector in range(boundary, end, SECTOR_SIZE):
        if flash.read(sector, SECTOR_SIZE) != BLANK:
            flash.erase(sector, SECTOR_SIZE)
    return True


def _log_file(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


# -- writers ------------------------------------------------------------------------------------------------


class StepWriter:
    """OVMS's OvmsWriter as the migration uses it: a console, or (subclass) the partition-update log."""

    log_path: str | None = None  # the file this writer appends to

    def __init__(self, puts: Callable[[str], None]) -> None:
        self._puts = puts

    def puts(self, line: str) -> None:
        self._puts(line)

    def notify_vfs_migration(self, src: str, dst: str) -> None:
        """A file was copied to ``dst``: a writer appending to ``src`` continues in ``dst``."""


class LogFileWriter(StepWriter):
    """FileWriter("/store/partition-update.log", log_writes=true): each line is appended to the file and logged
    with tag ``file-writer``."""

    def __init__(self, flash: Flash, store: Partition, log: Callable[[str, str, str], None]) -> None:
        super().__init__(lambda line: None)
        self._flash = flash
        self._store = store
        self._log = log
        self._known: _Log | None = None  # the log file as this writer's last append left it
        self.log_path = LOG_PATH

    @property
    def partition(self) -> Partition:
        return STORE2 if self.log_path == STORE2_LOG else self._store

    def puts(self, line: str) -> None:
        self._known = append_log(self._flash, self.partition, line, self._known)
        self._log(f"{self.log_path}: {line}", "I", "file-writer")

    def notify_vfs_migration(self, src: str, dst: str) -> None:
        if src == self.log_path:
            self._log(f"Migrating to write to {dst}", "I", "file-writer")
            self.log_path = dst
            self._known = None


# -- the copy -----------------------------------------------------------------------------------------------


@dataclass
class Store2:
    """ovms_store2_mounted for one boot, and the directories created on /store2 that hold no file yet."""

    mounted: bool = False
    dirs: set[str] = field(default_factory=set)


def copy_store(flash: Flash, store: Partition, store2: Store2, writer: StepWriter) -> bool:
    """ovms_partition_table_copy_store: breadth-first over /store in directory order. A file whose copy already
    has its size is skipped (still listed); the writer's own log file is copied last, then the writer follows it."""
    src_config = read_config(flash, store) or {}
    dst_config = read_config(flash, STORE2)
    log = load_log(flash, store)
    copied = errors = 0
    postponed: str | None = None
    writer.puts(f"Copy {SRC} -> {DST} ...")
    queue = [SRC]
    while queue:
        directory = queue.pop(0)
        writer.puts(f"Scanning directory: {directory}")
        if directory == SRC:
            sub = f"{DST}/{CONFIG_DIR}"
            if dst_config is None and sub not in store2.dirs:
                store2.dirs.add(sub)
                writer.puts(f"Create directory: {sub}")
            queue.append(f"{SRC}/{CONFIG_DIR}")
            writer.puts(f"Queued directory: {SRC}/{CONFIG_DIR}")
            if log is not None and writer.log_path == LOG_PATH:
                postponed = writer.log_path
                writer.puts(f"Postponing log output file {postponed}")
            elif log is not None:
                copied += _copy_log(flash, store, writer)
            continue
        n, bad = _copy_config(flash, src_config, dst_config or {}, writer)
        copied, errors = copied + n, errors + bad
    if postponed is not None:
        copied += _copy_log(flash, store, writer)
    writer.puts(f"Copy finished: {copied} files copied, {errors} errors")
    return errors == 0


def _copy_config(flash: Flash, src: Params, dst: Params, writer: StepWriter) -> tuple[int, int]:
    src_files, dst_files = config_files(src), config_files(dst)
    merged = {p: dict(v) for p, v in dst.items()}
    copied = 0
    for param, data in src_files.items():
        writer.puts(f"Copy file: {SRC}/{CONFIG_DIR}/{param} -> {DST}/{CONFIG_DIR}/{param}")
        if param in dst_files and len(dst_files[param]) == len(data):
            continue  # OVMS: "file already copied (Note: won't detect same size changes)"
        merged[param] = dict(src[param])
        copied += 1
    if merged != dst or read_config(flash, STORE2) is None:
        config_banks(flash, STORE2).save(encode_json(merged))
    got = config_files(read_config(flash, STORE2) or {})
    errors = 0
    for param, data in config_files(merged).items():
        if got.get(param) != data:
            writer.puts(
                f"Error: size mismatch on {SRC}/{CONFIG_DIR}/{param}: {len(got.get(param, b''))} bytes copied, "
                f"{len(data)} expected (/store corrupted)"
            )
            errors += 1
    return copied - errors, errors


def _copy_log(flash: Flash, store: Partition, writer: StepWriter) -> int:
    src, dst = LOG_PATH, STORE2_LOG
    writer.puts(f"Copy file: {src} -> {dst}")  # lands in the file before it is copied, as on OVMS
    lines = load_log(flash, store) or []
    existing = load_log(flash, STORE2)
    if existing is not None and len(_log_file(existing)) == len(_log_file(lines)):
        return 0
    write_log(flash, STORE2, lines)
    writer.notify_vfs_migration(src, dst)
    return 1
