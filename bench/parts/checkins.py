"""Fleet check-ins written per second: the registry's batched writes to SQLite and to PostgreSQL, side by side.

Each round records BATCH check-ins from distinct OVMS User-Agents (as a server does for 0.5 s of traffic) and
writes them in one transaction, the way the server's flush does. Usage: checkins.py POSTGRES_URL [--smoke].
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ovota.server.fleet.agent import parse_user_agent
from ovota.server.fleet.registry import FleetRecorder
from ovota.server.store.backends import Backends
from ovota.server.store.repository import Repository

BATCH = 5000
ROUNDS = 6


def rate(repo: Repository, rounds: int, batch: int) -> float:
    recorder = FleetRecorder(repo)
    rates = []
    for round_ in range(rounds):
        for n in range(batch):
            agent = parse_user_agent(
                f"ovms/v3.3-5 (B{round_ % 2}-{n} 3.3.006/ota_0/main (build idf v3.3.4, product v3.3-5))"
            )
            assert agent is not None
            recorder.check_in(agent, "v3.3-5", "main", "127.0.0.1", time.time())
        taken = recorder.take()
        assert taken is not None
        start = time.perf_counter()
        recorder.write(taken)
        rates.append(batch / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("postgres_url")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    rounds, batch = (1, 100) if args.smoke else (ROUNDS, BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Repository(Path(tmp) / "repo")
        postgres = Repository(Backends(db=args.postgres_url, blobs="s3://unused", cache=Path(tmp) / "cache"))
        try:
            lite, pg = rate(sqlite, rounds, batch), rate(postgres, rounds, batch)
        finally:
            sqlite.close()
            postgres.close()
    print(f"check-ins written per second, batches of {batch}, median of {rounds} rounds")
    print(f"SQLite (WAL, synchronous=FULL) : {lite:10.0f}/s")
    print(f"PostgreSQL                     : {pg:10.0f}/s")
    print(f"ratio PostgreSQL / SQLite      : {pg / lite:.2f}")


if __name__ == "__main__":
    main()
