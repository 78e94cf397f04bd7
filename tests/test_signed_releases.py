"""Server trust: a product that trusts a signing key only takes builds signed by it (CLI, API, promote,
rollback, rollouts), refusals write nothing, listings show signers; and HTTPS with a test CA."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import CliRunner
from tests.module_helpers import new_module
from tests.servers import OvotaServer
from tests.signing import NEW, OLD, Keys, forged, signed, unsigned
from tests.stores import Store
from tests.test_server import http

PRODUCT = "v3.3-5"


@pytest.fixture
def trusted_repo(store: Store, tmp_path: Path, keys: Keys, ovota: CliRunner) -> Store:
    """A repository (folder, and PostgreSQL + S3) with an unsigned build on edge, then the signing key trusted
    for the product."""
    repo = store
    (tmp_path / "old.bin").write_bytes(unsigned(OLD))
    assert ovota("release", "publish", tmp_path / "old.bin", *repo.args, "--tag", "edge").code == 0
    run = ovota("release", "trust", *repo.args, "--product", PRODUCT, "--key", keys.public, "--name", "ci")
    assert run.code == 0, run.err
    assert run.out == f"{PRODUCT} now trusts key digest {keys.digest.hex()}\n"
    return repo


def test_publish_refuses_unsigned_and_foreign_builds(tmp_path: Path, trusted_repo: Store, keys: Keys,
                                                     ovota: CliRunner) -> None:  # fmt: skip
    before = trusted_repo.state()
    other_digest = None
    for name, data in (("unsigned", unsigned(NEW)), ("foreign", signed(keys.other, NEW))):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        run = ovota("release", "publish", path, *trusted_repo.args, "--tag", "main")
        assert run.code == 2
        assert len(run.err.strip().splitlines()) == 1, run.err
        assert f"only accepts images signed by {keys.digest.hex()}" in run.err
        if name == "unsigned":
            assert "this image has no valid signature" in run.err
        else:
            other_digest = run.err.rsplit("valid signatures by ", 1)[1].strip()
        assert trusted_repo.state() == before
    assert other_digest is not None and len(other_digest) == 64 and other_digest != keys.digest.hex()
    # A forged signature: the block is well formed, but its signature does not verify.
    (tmp_path / "tampered.bin").write_bytes(forged(signed(keys.signing, NEW)))
    run = ovota("release", "publish", tmp_path / "tampered.bin", *trusted_repo.args, "--tag", "main")
    assert run.code == 2 and "no valid signature" in run.err, run.err
    rollout = ovota("release", "publish", tmp_path / "unsigned.bin", *trusted_repo.args, "--tag", "main",
                    "--rollout", "1,100")  # fmt: skip
    assert rollout.code == 2 and "only accepts images signed by" in rollout.err
    # Moving a channel to the old unsigned build is refused as well.
    promote = ovota("release", "promote", *trusted_repo.args, "--product", PRODUCT, "--from", "edge",
                    "--to", "main")  # fmt: skip
    assert promote.code == 2 and "only accepts images signed by" in promote.err
    assert trusted_repo.state() == before
    good = tmp_path / "good.bin"
    good.write_bytes(signed(keys.signing, NEW, secure_version=3))
    run = ovota("release", "publish", good, *trusted_repo.args, "--tag", "main")
    assert run.code == 0, run.err
    listing = ovota("release", "list", *trusted_repo.args).out.splitlines()
    main = next(line.split() for line in listing if line.split()[1] == "main")
    assert main[2] == NEW and main[-2:] == ["sv3", keys.digest.hex()[:16]]
    edge = next(line.split() for line in listing if line.split()[1] == "edge")
    assert edge[-2:] == ["sv0", "unsigned"]


def test_trust_list_and_untrust(tmp_path: Path, trusted_repo: Store, keys: Keys, ovota: CliRunner) -> None:
    listed = ovota("release", "trust", *trusted_repo.args, "--list")
    assert listed.code == 0
    assert listed.out.split()[:2] == [PRODUCT, keys.digest.hex()] and listed.out.split()[-1] == "ci"
    again = ovota("release", "trust", *trusted_repo.args, "--product", PRODUCT, "--key", keys.signing)
    assert again.out == f"{PRODUCT} already trusted key digest {keys.digest.hex()}\n"
    bad = ovota("release", "trust", *trusted_repo.args, "--product", PRODUCT, "--key", tmp_path / "nothing")
    assert bad.code == 2
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    junk = ovota("release", "trust", *trusted_repo.args, "--product", PRODUCT, "--key", tmp_path / "junk.pem")
    assert junk.code == 2 and "not a PEM public or private key" in junk.err
    run = ovota("release", "untrust", *trusted_repo.args, "--product", PRODUCT, "--digest", keys.digest.hex())
    assert run.code == 0 and "0 trusted key(s) left" in run.out
    assert "No trusted keys" in ovota("release", "trust", *trusted_repo.args, "--list").out
    (tmp_path / "plain.bin").write_bytes(unsigned(NEW))
    assert ovota("release", "publish", tmp_path / "plain.bin", *trusted_repo.args, "--tag", "main").code == 0
    missing = ovota("release", "untrust", *trusted_repo.args, "--product", PRODUCT, "--key", keys.public)
    assert missing.code == 1 and "does not trust" in missing.err


def test_api_publish_and_listings_show_signers(tmp_path: Path, trusted_repo: Store, keys: Keys,
                                               ovota: CliRunner) -> None:  # fmt: skip
    token = ovota("token", "create", *trusted_repo.args, "--name", "ci").out.strip()
    server = OvotaServer(trusted_repo)
    try:
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        before = trusted_repo.state()
        status, _, body = http(f"{server.url}/api/v1/publish?tag=main", "POST", auth, unsigned(NEW))
        assert status == 400
        assert "only accepts images signed by" in json.loads(body)["error"]
        assert trusted_repo.state() == before
        status, _, body = http(f"{server.url}/api/v1/publish?tag=main", "POST", auth, signed(keys.signing, NEW, 2))
        assert status == 201, body
        answer = json.loads(body)
        assert (answer["secure_version"], answer["signers"]) == (2, [keys.digest.hex()])
        status, _, body = http(f"{server.url}/firmware/ota/{PRODUCT}/", headers={"Accept": "application/json"})
        listed = {c["tag"]: c for c in json.loads(body)}
        assert listed["main"]["signers"] == [keys.digest.hex()] and listed["edge"]["signers"] == []
        status, _, page = http(f"{server.url}/firmware/ota/{PRODUCT}/main/")
        assert status == 200
        assert f"<code>{keys.digest.hex()}</code>" in page.decode() and "Signed by" in page.decode()
        status, _, served = http(f"{server.url}/firmware/ota/{PRODUCT}/main/ovms3.bin")
        assert served == signed_bytes(trusted_repo, answer["sha256"])
    finally:
        server.stop()


def signed_bytes(repo: Store, sha256: str) -> bytes:
    r = repo.repository()
    try:
        return r.blob_path(sha256).read_bytes()
    finally:
        r.close()


# -- HTTPS ------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    yield paths


def test_https_server_serves_modules_and_api(tmp_path: Path, keys: Keys, tls_files: tuple[Path, Path, Path],
                                             ovota: CliRunner) -> None:  # fmt: skip
    cert, key, ca = tls_files
    repo = tmp_path / "repo"
    firmware = tmp_path / "new.bin"
    firmware.write_bytes(signed(keys.signing, NEW, size=300_000))
    assert ovota("release", "publish", firmware, "--repo", repo, "--tag", "main").code == 0
    server = OvotaServer(repo, extra=("--tls-cert", str(cert), "--tls-key", str(key)))
    plain = OvotaServer(repo)  # modules are served by a second, plain server on the same repository
    try:
        # As OVMS, the module strips https:// and talks plain HTTP: a TLS-only port does not answer it.
        flash = new_module(tmp_path / "m.img", version=OLD)
        tls_only = f"https://127.0.0.1:{server.port}/firmware/ota"
        refused = ovota("module", "run", flash, "--", f"config set ota server {tls_only}", "ota flash http")
        assert refused.code == 1 and "Error: Request failed" in refused.out
        base = f"https://127.0.0.1:{plain.port}/firmware/ota"
        run = ovota("module", "run", flash, "--", f"config set ota server {base}", "ota status", "ota flash http",
                    "module reset", "ota status nocheck")  # fmt: skip
        assert run.code == 0, run.out
        assert f"Server Available:  {NEW} (is newer)" in run.out
        assert "Running partition: ota_1" in run.out
        dumped = tmp_path / "ota_1.bin"
        assert ovota("module", "dump", flash, "--partition", "ota_1", dumped).code == 0
        # The signed file's image part is what the slot holds; the listing and API answer over TLS.
        assert firmware.read_bytes().startswith(dumped.read_bytes())
        listing = ovota_https_get(f"https://127.0.0.1:{server.port}/firmware/ota/", ca)
        assert PRODUCT in listing
    finally:
        server.stop()
        plain.stop()
    bad = ovota("server", "--repo", repo, "--tls-cert", cert)
    assert bad.code == 2 and "both --tls-cert and --tls-key" in bad.err


def ovota_https_get(url: str, ca: Path) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        return str(response.read().decode())
