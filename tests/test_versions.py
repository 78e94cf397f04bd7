"""OVMS version comparison: the acceptance table of ovms-ota.md §5.2, and glibc strverscmp itself."""

from __future__ import annotations

import pytest

from ovota.formats.versions import buildverscmp, canonical_build_version, is_newer, product_name, strverscmp

# server (ovms3.ver line 1), firmware m.version, expected cmp (None: only the sign is given), "(is newer)"?
TABLE = [
    ("3.3.005-928-g7f8b5d676", "3.3.005-925-g3e67d4e6d-dirty/ota_1/edge (build …)", 3, True),
    ("3.3.006", "3.3.005/ota_0/main (build …)", 1, True),
    ("3.3.006", "3.3.006/ota_0/main (build …)", 0, False),
    ("3.3.006", "3.3.006-dirty/ota_0/main (build …)", 1, True),
    ("3.3.006-dirty", "3.3.006-dirty/ota_0/main", 0, False),
    ("3.3.006-12-gabcdef", "3.3.006/ota_1/main (build)", None, True),
    ("3.3.006-100-gaaaaaa", "3.3.006-99-gbbbbbb/ota_0/edge (build)", 1, True),
    ("3.3.005", "3.3.006/ota_0/main", -1, False),
    ("3.2.018", "3.3.001/factory/main", -1, False),
    ("", "3.3.006/ota_0/main (build x)", None, False),
    ("3.3.006 (build x)", "3.3.006/ota_0/main", 32, True),
    ("3.3.1", "3.3.006/ota_0/main", 1, True),
]


@pytest.mark.parametrize(("server", "firmware", "cmp", "newer"), TABLE)
def test_reference_table(server: str, firmware: str, cmp: int | None, newer: bool) -> None:
    result = buildverscmp(server, firmware)
    if cmp is not None:
        assert result == cmp
    assert (result > 0) == newer
    assert is_newer(server, firmware) == newer


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # glibc manual and test-suite examples
        ("no digit", "no digit", 0),
        ("item#99", "item#100", -1),
        ("alpha1", "alpha001", 1),
        ("part1_f012", "part1_f01", 1),
        ("foo.009", "foo.0", -1),
        ("000", "00", -1),
        ("00", "01", -1),
        ("01", "010", -1),
        ("010", "09", -1),
        ("09", "0", -1),
        ("0", "1", -1),
        ("9", "10", -1),
        ("1.2", "1.10", -1),
        ("abc", "abd", -1),
    ],
)
def test_strverscmp_order(a: str, b: str, expected: int) -> None:
    assert (strverscmp(a, b) > 0) - (strverscmp(a, b) < 0) == expected
    assert (strverscmp(b, a) > 0) - (strverscmp(b, a) < 0) == -expected


def test_canonical_form() -> None:
    assert canonical_build_version("3.3.005-925-g3e67d4e6d-dirty/ota_1/edge") == ("3.3.005-925-g3e67d4e6d", True)
    assert canonical_build_version("3.3.006/ota_0/main (build x)") == ("3.3.006", False)
    assert canonical_build_version("3.3.006") == ("3.3.006", False)


def test_product_names() -> None:
    assert product_name(chip_revision=3, new_layout=False) == "v3.3"
    assert product_name(chip_revision=3, new_layout=True) == "v3.3-5"
    assert product_name(chip_revision=1, new_layout=False) == "v3.1"
    assert product_name(chip_revision=1, new_layout=True) == "v3.1-5"
    assert product_name(chip_revision=3, new_layout=False, hardware_base="3.0") == "v3.0"
