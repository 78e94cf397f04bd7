"""Group membership at scale: read whole once per process and kept until the group changes (by this connection,
another one, or a transaction that rolled back), and asked one id at a time where a few ids are tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovota.server.fleet.groups import STAMP, Groups, InGroups, members
from ovota.server.store.backends import Backends
from ovota.server.store.repository import Repository


def test_members_are_kept_until_the_group_changes(tmp_path: Path) -> None:
    repo = Repository(Backends(folder=tmp_path / "repo"))
    other = Repository(Backends(folder=tmp_path / "repo"))  # another connection (a thread, a process)
    try:
        Groups(repo).add("fleet", [f"CAR{n}" for n in range(1000)], 1.0)
        first = members(other.db, ["fleet"])
        assert len(first) == 1000 and members(other.db, ["fleet"]) is first  # not read again
        Groups(repo).remove("fleet", ["CAR7"])
        again = members(other.db, ["fleet"])
        assert "CAR7" not in again and len(again) == 999
        with pytest.raises(RuntimeError), repo.transaction() as db:  # a change as Groups makes one, undone
            db.execute("DELETE FROM vehicle_groups WHERE name = 'fleet'")
            db.execute("UPDATE meta SET value = 'undone' WHERE key = ?", (STAMP + "fleet",))
            assert members(repo.db, ["fleet"]) == frozenset()
            raise RuntimeError("rolled back")
        assert members(other.db, ["fleet"]) == again  # the rolled-back stamp is not the committed one
        Groups(repo).add("fleet", ["CAR7"], 3.0)
        assert len(members(other.db, ["fleet"])) == 1000
        lookup = InGroups(other.db, ["fleet", "nobody"])
        assert "CAR7" in lookup and "CAR1000" not in lookup and 7 not in lookup  # type: ignore[comparison-overlap]
        assert "CAR7" not in InGroups(other.db, [])
    finally:
        repo.close()
        other.close()
