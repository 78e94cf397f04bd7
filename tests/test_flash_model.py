"""The NOR flash model: erase granularity, program-only-clears-bits, and cut/torn semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovota.device.flash import Flash, FlashError, PowerCut, PowerLoss


def test_nor_semantics(tmp_path: Path) -> None:
    with Flash.create(tmp_path / "f.img", 0x4000) as flash:
        assert flash.read(0, 16) == b"\xff" * 16
        flash.program(0x10, b"\x0f\xf0")
        flash.program(0x10, b"\x0e\x00")  # clearing more bits is fine
        assert flash.read(0x10, 2) == b"\x0e\x00"
        with pytest.raises(FlashError, match="over unerased data"):
            flash.program(0x10, b"\xff\x00")
        with pytest.raises(FlashError, match="not sector aligned"):
            flash.erase(0x800, 0x1000)
        with pytest.raises(FlashError, match="outside"):
            flash.read(0x3FF0, 0x20)
        flash.erase(0, 0x1000)
        assert flash.read(0x10, 2) == b"\xff\xff"
        assert flash.ops == 3  # two programs and one sector erase; the refused program did nothing


def test_cuts_and_torn_writes(tmp_path: Path) -> None:
    path = tmp_path / "f.img"
    Flash.create(path, 0x4000).close()
    with Flash(path, PowerCut(at_op=1)) as flash:
        flash.program(0, b"\x00" * 8)
        with pytest.raises(PowerLoss):
            flash.program(8, b"\x00" * 8)
    assert path.read_bytes()[:16] == b"\x00" * 8 + b"\xff" * 8
    with Flash(path, PowerCut(at_op=0, torn=True)) as flash, pytest.raises(PowerLoss):
        flash.program(8, b"\x00" * 8)
    assert path.read_bytes()[8:16] == b"\x00" * 4 + b"\xff" * 4
    with Flash(path, PowerCut(at_op=1, torn=True)) as flash, pytest.raises(PowerLoss):
        flash.erase(0, 0x2000)  # sector 0 erased, sector 1 half erased
    with Flash(path) as flash:
        flash.program(0x1800, b"\x00")
    with Flash(path, PowerCut(at_op=0, torn=True)) as flash, pytest.raises(PowerLoss):
        flash.erase(0x1000, 0x1000)
    data = path.read_bytes()
    assert data[:16] == b"\xff" * 16
    assert data[0x1800] == 0x00  # the second half of a torn erase keeps its old content
