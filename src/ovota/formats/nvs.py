"""ESP-IDF NVS partitions (``nvs_flash``, format version 2): what ESP-IDF would read from one, and a fresh image.

A partition is a run of 4096-byte pages. Each page: a 32-byte header (state u32, sequence number u32, version
u8 0xFE, 19 x 0xFF, CRC32 of bytes 4-27), an entry-state bitmap (bytes 32-63, 2 bits per entry, LSB first:
11 empty, 10 written, 00 erased) and 126 entries of 32 bytes from byte 64. An item is one entry (namespace
index, type, span, chunk index, CRC32 of bytes 0-3 and 8-31, key[16], data[8]); strings and blobs continue
their data in ``span - 1`` following entries. Namespaces are U8 items in namespace 0 whose value is the
index the other items carry. Blobs are BLOB_DATA chunks (one per page at most) plus a BLOB_IDX item; v1
images have single-page BLOB items instead. CRCs are the ROM's ``crc32_le(0xFFFFFFFF, ...)``.
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ovota.formats.errors import FormatError

PAGE_SIZE, FIRST_ENTRY, ENTRY_SIZE, ENTRY_COUNT = 4096, 64, 32, 126
CHUNK_ANY = 0xFF  # chunk index of everything but blob chunks
NVS_VERSION = 0xFE  # v2; v1 pages carry 0xFF, a lower number is a newer format
MAX_KEY = 15
MAX_NAMESPACES = 254  # indices 1-254; 255 is NS_ANY
MAX_STRING = 4000  # bytes with the NUL, Page::CHUNK_MAX_SIZE
MAX_CHUNKS = 128  # chunk indices of one blob version (VER_0 = 0, VER_1 = 0x80)

NvsValue = int | str | bytes
NvsValues = dict[str, dict[str, NvsValue]]


class PageState(enum.IntEnum):
    EMPTY = 0xFFFFFFFF
    ACTIVE = 0xFFFFFFFE
    FULL = 0xFFFFFFFC
    FREEING = 0xFFFFFFF8
    CORRUPT = 0xFFFFFFF0


ENTRY_EMPTY, ENTRY_WRITTEN, ENTRY_ERASED = 0b11, 0b10, 0b00  # entry-state bitmap values


class ItemType(enum.IntEnum):
    U8 = 0x01
    I8 = 0x11
    U16 = 0x02
    I16 = 0x12
    U32 = 0x04
    I32 = 0x14
    U64 = 0x08
    I64 = 0x18
    SZ = 0x21
    BLOB = 0x41
    BLOB_DATA = 0x42
    BLOB_IDX = 0x48


INT_TYPES = {t.name.lower(): t for t in ItemType if t < ItemType.SZ}
VARIABLE_TYPES = (ItemType.SZ, ItemType.BLOB, ItemType.BLOB_DATA)


def nvs_crc(data: bytes) -> int:
    """ESP-IDF's CRC32 of ``data``: the ROM's crc32_le(0xFFFFFFFF, ...), which equals zlib's crc32 from there."""
    return binascii.crc32(data, 0xFFFFFFFF)


def _int_range(item_type: ItemType) -> range:
    bits = 8 * (item_type & 0x0F)
    return range(-(1 << (bits - 1)), 1 << (bits - 1)) if item_type & 0x10 else range(1 << bits)


@dataclass(frozen=True)
class Typed:
    """An integer and its NVS type (``"u8"``, ``"i8"``, ... ``"i64"``), for :func:`build_nvs`.

    Raises :class:`FormatError` for an unknown kind or a value outside the kind's range."""

    value: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in INT_TYPES:
            raise FormatError(f"unknown NVS integer type {self.kind!r} (use one of {', '.join(INT_TYPES)})")
        if self.value not in _int_range(INT_TYPES[self.kind]):
            raise FormatError(f"{self.value} does not fit NVS type {self.kind}")

    @classmethod
    def of(cls, value: int) -> Typed:
        """A plain int's type: i32 if it fits, else u32, else i64, else u64 (FormatError beyond that)."""
        for kind in ("i32", "u32", "i64", "u64"):
            if value in _int_range(INT_TYPES[kind]):
                return cls(value, kind)
        raise FormatError(f"{value} does not fit any NVS integer type")


@dataclass(frozen=True)
class PageHeader:
    """The first 32 bytes of a page."""

    state: int
    seq: int
    version: int = NVS_VERSION

    LAYOUT = struct.Struct("<IIB19sI")

    @classmethod
    def from_bytes(cls, page: bytes) -> PageHeader | None:
        """The header of ``page`` (at least 32 bytes); None when its CRC is wrong, as ESP-IDF's CORRUPT."""
        state, seq, version, _, crc = cls.LAYOUT.unpack_from(page)
        if crc != nvs_crc(page[4:28]):
            return None
        return cls(state, seq, version)

    def to_bytes(self) -> bytes:
        head = self.LAYOUT.pack(self.state, self.seq, self.version, b"\xff" * 19, 0)
        return head[:28] + struct.pack("<I", nvs_crc(head[4:28]))


@dataclass(frozen=True)
class Item:
    """One 32-byte item header. ``data`` is the 8-byte value field: an integer, (size u16, reserved u16,
    data CRC u32) for strings and blob chunks, or (size u32, chunk count u8, chunk start u8) for a blob index."""

    ns: int
    type: int
    span: int
    chunk: int
    key: bytes  # 16 bytes, NUL padded
    data: bytes  # 8 bytes

    LAYOUT = struct.Struct("<BBBBI16s8s")

    @classmethod
    def make(cls, ns: int, item_type: int, span: int, chunk: int, key: str, data: bytes) -> Item:
        return cls(ns, item_type, span, chunk, _encode(key, "key").ljust(16, b"\0"), data.ljust(8, b"\xff"))

    @classmethod
    def from_bytes(cls, entry: bytes) -> Item | None:
        """The item in a 32-byte entry; None when its CRC is wrong."""
        ns, item_type, span, chunk, crc, key, data = cls.LAYOUT.unpack_from(entry)
        if crc != nvs_crc(entry[:4] + entry[8:32]):
            return None
        return cls(ns, item_type, span, chunk, key, data)

    def to_bytes(self) -> bytes:
        head = bytes((self.ns, self.type, self.span, self.chunk))
        return head + struct.pack("<I", nvs_crc(head + self.key + self.data)) + self.key + self.data

    @property
    def name(self) -> str:
        """The key as ESP-IDF compares it: up to the first NUL, at most 15 bytes."""
        return self.key.split(b"\0", 1)[0][:MAX_KEY].decode("utf-8", "surrogateescape")

    @property
    def size(self) -> int:
        """Data size of a string, blob or blob chunk (u16), or a blob index's total size (u32)."""
        fmt = "<I" if self.type == ItemType.BLOB_IDX else "<H"
        return int(struct.unpack_from(fmt, self.data)[0])

    def value(self, payload: bytes) -> NvsValue | BlobIndex | None:
        """The value this item stands for, given its (CRC-checked) payload; None for unknown types."""
        if self.type in INT_TYPES.values():
            return int.from_bytes(self.data[: self.type & 0x0F], "little", signed=bool(self.type & 0x10))
        if self.type == ItemType.SZ:
            return payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if self.type == ItemType.BLOB:
            return payload
        if self.type == ItemType.BLOB_IDX and self.chunk == CHUNK_ANY:
            return BlobIndex(self.size, self.data[4], self.data[5])
        return None


@dataclass(frozen=True)
class BlobIndex:
    """A BLOB_IDX item: the blob is chunks ``start .. start+count-1`` of its key, ``size`` bytes together."""

    size: int
    count: int
    start: int

    def assemble(self, chunks: Mapping[int, bytes]) -> bytes | None:
        """The blob from its chunks by index; None when one is missing or the sizes disagree (ESP-IDF: not found)."""
        parts = [chunks.get((self.start + i) & 0xFF) for i in range(self.count)]
        blob = b"".join(p for p in parts if p is not None)
        return blob if None not in parts and len(blob) == self.size else None


@dataclass(frozen=True)
class Page:
    """One 4096-byte page with a valid header: its entry-state bitmap and the items ESP-IDF would load."""

    header: PageHeader
    raw: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> Page | None:
        """The page in ``raw``, or None when ESP-IDF would not load items from it (empty, corrupt, bad CRC,
        unknown state). Raises FormatError for a page of a newer NVS format, which ESP-IDF refuses to mount."""
        header = PageHeader.from_bytes(raw)
        if header is None or header.state == PageState.EMPTY:
            return None
        if header.version < NVS_VERSION:
            raise FormatError(f"NVS page {header.seq} has format version {header.version:#04x}, newer than v2")
        return cls(header, raw) if header.state in (PageState.ACTIVE, PageState.FULL, PageState.FREEING) else None

    def entry(self, index: int) -> bytes:
        start = FIRST_ENTRY + ENTRY_SIZE * index
        return self.raw[start : start + ENTRY_SIZE]

    def items(self) -> Iterator[tuple[Item, bytes]]:
        """Each written item with a correct CRC, in entry order, and its payload (strings and blobs: the data,
        its CRC checked). An active page ends at its first empty entry; a string or blob whose entries are not
        all written, or whose data CRC is wrong, is skipped with its span, as ESP-IDF erases it."""
        states = [(self.raw[32 + i // 4] >> (2 * (i % 4))) & 3 for i in range(ENTRY_COUNT)]
        end = ENTRY_COUNT
        if self.header.state == PageState.ACTIVE and ENTRY_EMPTY in states:
            end = states.index(ENTRY_EMPTY)
        index = 0
        while index < end:
            item = Item.from_bytes(self.entry(index)) if states[index] == ENTRY_WRITTEN else None
            if item is None or item.type not in VARIABLE_TYPES:
                if item is not None:
                    yield item, b""
                index += 1
                continue
            span = max(item.span, 1)
            following = range(index + 1, index + span)
            if index + span <= end and all(states[i] == ENTRY_WRITTEN for i in following):
                payload = b"".join(self.entry(i) for i in following)[: item.size]
                if len(payload) == item.size and nvs_crc(payload) == struct.unpack_from("<I", item.data, 4)[0]:
                    yield item, payload
            index += span


def read_nvs(partition: bytes) -> NvsValues:
    """Namespace -> key -> value, as ESP-IDF's ``nvs_get_*`` would find them in ``partition``.

    Pages are read in sequence-number order (active, full and freeing pages; empty, corrupt and unknown ones
    are skipped). Items with a wrong CRC, not in the written state, or whose data is incomplete are ignored;
    of several valid items with one key in one namespace the later one wins. Integers come back as ints (their
    width and sign lost), strings (SZ) as str up to the first NUL (undecodable bytes kept as surrogate escapes),
    blobs (v2 BLOB_IDX + BLOB_DATA, or v1 BLOB) as bytes; a blob whose chunks are missing or do not add up is
    absent. Every namespace is present, even without keys. Raises only :class:`FormatError`: for a length that
    is not a positive multiple of 4096, or a page of a newer NVS format.
    """
    if not partition or len(partition) % PAGE_SIZE:
        raise FormatError(f"an NVS partition is whole 4096-byte pages, got {len(partition)} bytes")
    found = (Page.from_bytes(partition[at : at + PAGE_SIZE]) for at in range(0, len(partition), PAGE_SIZE))
    pages = sorted((p for p in found if p is not None), key=lambda p: p.header.seq)
    names: dict[int, str] = {}
    candidates: dict[tuple[int, str], list[NvsValue | BlobIndex]] = {}
    chunks: dict[tuple[int, str], dict[int, bytes]] = {}
    for page in pages:
        for item, payload in page.items():
            if item.ns == 0:
                if item.type == ItemType.U8 and 0 < item.data[0] < 0xFF:
                    names[item.data[0]] = item.name
            elif item.type == ItemType.BLOB_DATA:
                chunks.setdefault((item.ns, item.name), {})[item.chunk] = payload
            elif (value := item.value(payload)) is not None:
                candidates.setdefault((item.ns, item.name), []).append(value)
    result: NvsValues = {}
    owner: dict[int, str] = {}
    for index, name in names.items():
        if name not in result:  # two indices with one name: ESP-IDF opens the first it loaded
            result[name] = {}
            owner[index] = name
    for (ns, key), values in candidates.items():
        if ns not in owner:
            continue
        for value in reversed(values):
            final = value.assemble(chunks.get((ns, key), {})) if isinstance(value, BlobIndex) else value
            if final is not None:
                result[owner[ns]][key] = final
                break
    return result


class NvsWriter:
    """Lays items out in pages exactly as esp-idf-nvs-partition-gen (v2) does: in the order given, a new page
    when one is full (the previous one marked FULL, the last written one left ACTIVE), blobs split into chunks
    that fill each page but its last entry, then empty pages, and a last page kept free for ESP-IDF's GC."""

    def __init__(self, size: int) -> None:
        if size % PAGE_SIZE or size < 3 * PAGE_SIZE:
            raise FormatError(f"NVS partition size must be a multiple of 0x1000 and >= 0x3000, got {size:#x}")
        self.size = size
        self.pages: list[bytearray] = []
        self.used = 0  # entries used in the current page
        self.new_page()

    def new_page(self) -> None:
        if self.pages:
            struct.pack_into("<I", self.pages[-1], 0, PageState.FULL)
        if len(self.pages) == self.size // PAGE_SIZE - 1:
            raise FormatError(f"the values do not fit in an NVS partition of {self.size:#x} bytes")
        page = bytearray(b"\xff" * PAGE_SIZE)
        page[:32] = PageHeader(PageState.ACTIVE, len(self.pages)).to_bytes()
        self.pages.append(page)
        self.used = 0

    def put(self, data: bytes, entries: int) -> None:
        """Write ``data`` from the next free entry and mark ``entries`` entries written."""
        page = self.pages[-1]
        start = FIRST_ENTRY + ENTRY_SIZE * self.used
        page[start : start + len(data)] = data
        for _ in range(entries):
            page[32 + self.used // 4] &= ~(1 << (2 * (self.used % 4))) & 0xFF
            self.used += 1

    def integer(self, ns: int, key: str, value: Typed) -> None:
        if self.used >= ENTRY_COUNT:
            self.new_page()
        data = value.value.to_bytes(INT_TYPES[value.kind] & 0x0F, "little", signed=value.kind[0] == "i")
        self.put(Item.make(ns, INT_TYPES[value.kind], 1, CHUNK_ANY, key, data).to_bytes(), 1)

    def string(self, ns: int, key: str, text: str) -> None:
        data = _encode(text, key) + b"\0"
        if len(data) > MAX_STRING or b"\0" in data[:-1]:
            raise FormatError(f"NVS string {key!r}: at most {MAX_STRING - 1} bytes, no NUL")
        entries = -(-len(data) // ENTRY_SIZE)
        # the generator moves on when the string would reach the page's end; a string that needs a whole
        # page (which makes the generator fail) goes on a fresh one, as ESP-IDF writes it
        if self.used >= ENTRY_COUNT or (self.used + entries + 1 >= ENTRY_COUNT and self.used > 0):
            self.new_page()
        head = struct.pack("<HHI", len(data), 0xFFFF, nvs_crc(data))
        self.put(Item.make(ns, ItemType.SZ, entries + 1, CHUNK_ANY, key, head).to_bytes() + data, entries + 1)

    def blob(self, ns: int, key: str, blob: bytes) -> None:
        if self.used >= ENTRY_COUNT:
            self.new_page()
        offset, chunk = 0, 0
        while True:
            room = (ENTRY_COUNT - self.used - 1) * ENTRY_SIZE
            part = blob[offset : offset + room]
            if chunk == MAX_CHUNKS:
                raise FormatError(f"NVS blob {key!r} needs more than {MAX_CHUNKS} chunks")
            entries = -(-len(part) // ENTRY_SIZE)
            head = struct.pack("<HHI", len(part), 0xFFFF, nvs_crc(part))
            item = Item.make(ns, ItemType.BLOB_DATA, entries + 1, chunk, key, head)
            self.put(item.to_bytes() + part, entries + 1)
            offset, chunk = offset + len(part), chunk + 1
            if offset < len(blob) or room - len(part) < ENTRY_SIZE:
                self.new_page()
            if offset >= len(blob):
                break
        index = struct.pack("<IBB", len(blob), chunk, 0)
        self.put(Item.make(ns, ItemType.BLOB_IDX, 1, CHUNK_ANY, key, index).to_bytes(), 1)

    def image(self) -> bytes:
        return b"".join(self.pages) + b"\xff" * (self.size - PAGE_SIZE * len(self.pages))


def _encode(name: str, what: str) -> bytes:
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise FormatError(f"NVS {what!r}: text that UTF-8 cannot encode") from None


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not 0 < len(_encode(key, "key")) <= MAX_KEY or "\0" in key:
        raise FormatError(f"NVS key or namespace {key!r}: must be 1-{MAX_KEY} bytes without NUL")
    return key


def build_nvs(values: Mapping[str, Mapping[str, NvsValue | Typed]], size: int) -> bytes:
    """A fresh NVS partition image of ``size`` bytes holding ``values`` (namespace -> key -> value), which
    ESP-IDF mounts and :func:`read_nvs` reads back as given (integers as plain ints).

    Namespaces get indices 1, 2, ... in the order given; items are written namespace entry first, then its keys
    in order, byte for byte as esp-idf-nvs-partition-gen (format v2) writes the CSV with those rows. Values:
    :class:`Typed` for an integer of a chosen type; a plain int is i32 if it fits, else u32, else i64, else u64;
    str is an SZ string (UTF-8, NUL added; at most 3999 bytes, no NUL inside); bytes/bytearray a blob (v2,
    chunked over pages). ``size`` is a multiple of 0x1000, at least 0x3000. Raises :class:`FormatError` for
    values NVS cannot hold or that do not fit ``size``.
    """
    if len(values) > MAX_NAMESPACES:
        raise FormatError(f"NVS holds at most {MAX_NAMESPACES} namespaces, got {len(values)}")
    writer = NvsWriter(size)
    for ns, (namespace, items) in enumerate(values.items(), start=1):
        writer.integer(0, _check_key(namespace), Typed(ns, "u8"))  # a namespace: U8 item in namespace 0
        for key, value in items.items():
            _check_key(key)
            if isinstance(value, Typed):
                writer.integer(ns, key, value)
            elif isinstance(value, int):
                writer.integer(ns, key, Typed.of(value))
            elif isinstance(value, str):
                writer.string(ns, key, value)
            elif isinstance(value, bytes | bytearray):
                writer.blob(ns, key, bytes(value))
            else:
                raise FormatError(f"NVS value for {key!r}: {type(value).__name__} is not int, Typed, str or bytes")
    return writer.image()
