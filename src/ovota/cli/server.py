"""``ovota server``, ``ovota release`` and ``ovota token``: run and manage the update server."""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path
from typing import Any

import click

from ovota.cli.output import row, when
from ovota.cli.repo_access import open_repository, repo_option
from ovota.cli.rollout import rollout_options, start_rollout
from ovota.cli.targets import waypoint
from ovota.formats.signature import key_digest, load_public_key
from ovota.server.fleet.policy import PolicyError, parse_duration
from ovota.server.store import tokens
from ovota.server.store.backends import Backends
from ovota.server.store.errors import RepositoryError
from ovota.server.store.images import default_product, inspect_image
from ovota.server.store.product_rules import min_secure_version as get_min_secure_version
from ovota.server.store.product_rules import set_min_secure_version
from ovota.server.store.repository import Channel, Repository
from ovota.server.store.trust import trust as trust_key
from ovota.server.store.trust import trusted_keys
from ovota.server.store.trust import untrust as untrust_key


@click.command("server")
@repo_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes (SO_REUSEPORT).")
@click.option(
    "--time-scale", default=1.0, show_default=True, type=click.FloatRange(min=1.0),
    help="Run the server's clock this much faster (fleet simulations only; 1440: a day per minute).",
)  # fmt: skip
@click.option("--driven-clock", is_flag=True, help="Time stands still until POST /clock moves it (simulations).")
@click.option("--fleet/--no-fleet", default=True, show_default=True, help="Register modules from their requests.")
@click.option(
    "--delta-bases", default=3, show_default=True, type=click.IntRange(0, 50),
    help="Make delta patches from this many recent builds of each channel (0: none).",
)  # fmt: skip
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Serve HTTPS with this certificate chain (PEM).")  # fmt: skip
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The certificate's private key (PEM).")  # fmt: skip
@click.option("--forwarded-by", multiple=True, metavar="ADDRESS",
              help="A load balancer's address: its requests come from their last X-Forwarded-For address.")  # fmt: skip
@click.option("--public-url", default="", metavar="URL",
              help="The server's address as clients reach it (https://ota.example.com): JSON listings give URLs "
                   "under it; without it they are relative. The Host header is never used.")  # fmt: skip
@click.option(
    "--idle-timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Close a connection that is idle, or has not sent its whole request head, after this long (s).",
)
@click.option("--max-connections", type=click.IntRange(16), metavar="N",
              help="Open connections at most (default: the open-file limit less 256).")  # fmt: skip
@click.option("--max-per-address", default=256, show_default=True, type=click.IntRange(1),
              help="Open connections from one client address at most (load balancers: only the total).")  # fmt: skip
@click.option(
    "--retention",
    default="30d",
    show_default=True,
    help="Delete download records older than this (the fleet registry keeps each module's state).",
)
def server(
    repo: Backends, host: str, port: int, workers: int, time_scale: float, driven_clock: bool, fleet: bool,
    delta_bases: int, tls_cert: Path | None, tls_key: Path | None, forwarded_by: tuple[str, ...], public_url: str,
    idle_timeout: float, retention: str, max_connections: int | None, max_per_address: int,
) -> None:  # fmt: skip
    """Serve firmware to modules, the download area and the release API (HTTPS with --tls-cert/--tls-key;
    unchanged OVMS modules only speak plain HTTP, so serve them on a second, plain server)."""
    # Imported here, before the workers fork: the other commands of this module need neither aiohttp nor the app.
    from aiohttp import web

    from ovota.server.app import ConnectionCaps, cap_connections, create_app

    if driven_clock and (workers > 1 or time_scale != 1):
        raise click.UsageError("--driven-clock works with one worker and no --time-scale")
    if public_url and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[!-~]*)?", public_url):
        raise click.UsageError(f"--public-url {public_url!r}: give http(s)://HOST[:PORT][/PATH]")
    try:
        kept = parse_duration(retention)
    except PolicyError as err:
        raise click.UsageError(f"--retention: {err}") from None
    tls = _tls_context(tls_cert, tls_key)
    r = Repository(repo)  # create the schema once, before workers race for it
    clock = r.clock(time_scale, driven_clock)  # anchored once, so every worker keeps the same time
    r.close()
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    scaled = ", driven clock" if driven_clock else f", clock x{time_scale:g}" if time_scale != 1 else ""
    scheme = "https" if tls else "http"
    where = f"repository {repo.describe()}, pid {os.getpid()}{scaled}"
    row(f"ovota server on {scheme}://{host}:{port}/firmware/ota/ ({where})")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    # The default asyncio loop, not uvloop: uvloop lacks transport sendfile, which the .bin path relies on.
    descriptors = _more_file_descriptors()
    app = create_app(repo, clock, fleet, delta_bases, forwarded_by, public_url, tls is not None, kept, idle_timeout)
    total = max_connections or max(64, descriptors - 256)  # room for blobs, the database and logs
    cap_connections(app, ConnectionCaps(total, max_per_address, frozenset(forwarded_by)))
    web.run_app(app, host=host, port=port, reuse_port=workers > 1, ssl_context=tls, print=None, access_log=None,
                keepalive_timeout=idle_timeout)  # fmt: skip


def _more_file_descriptors() -> int:
    """Raise the soft limit on open files to the hard one (every connection is a descriptor, and 1,024, a common
    default, is soon reached by slow clients); the limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 16 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft
        return wanted
    return soft


def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise click.UsageError("HTTPS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as err:
        raise click.UsageError(f"cannot use {cert} with {key}: {err}") from None
    return context


@click.group()
def release() -> None:
    """Publish, promote and roll back builds in release channels."""


@release.command("publish")
@click.argument("image", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@repo_option
@click.option("--tag", required=True, help="Channel: main, eap, edge or another name.")
@click.option("--product", help="Product directory (default: v3.3-5 for 3.3.006 and later, else v3.3).")
@click.option("--changelog", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Changelog text.")
@click.option("--force", is_flag=True, help="Publish even if the channel has a rollout (which is aborted).")
@click.option("--new-channel", is_flag=True, help="Make the channel if it is none of main, eap, edge and is new.")
@click.option("--if-empty", is_flag=True, help="Only into a channel that serves no build yet (seeding); else keep it.")
@click.option("--rollout", "steps", help="Roll the build out in steps (e.g. 1,10,50,100) instead of at once.")
@rollout_options
def publish(
    image: Path, repo: Backends, tag: str, product: str | None, changelog: Path | None, force: bool,
    new_channel: bool, if_empty: bool, steps: str | None, **options: Any,
) -> None:  # fmt: skip
    """Validate IMAGE and make it the current build of a channel (or start a rollout of it)."""
    with open_repository(repo) as r:
        if if_empty and (kept := _serving(r, image, product, tag)) is not None:
            row(f"Kept {kept.product}/{kept.tag}: the channel already serves {kept.build.version} "
                f"(sha256 {kept.build.sha256})")  # fmt: skip
            return
        text = changelog.read_text() if changelog else ""
        if steps:
            build, product = r.add_build(image.read_bytes(), product, text)
            row(f"Added {build.version} to the repository (sha256 {build.sha256})")
            start_rollout(r, product, tag, build, steps, **options)
            return
        data = image.read_bytes()
        serving = _serving(r, image, product, tag)
        channel = r.publish(data, tag, product, text, force, new_channel)
        same = serving is not None and serving.build.sha256 == channel.build.sha256
        what = "Nothing to do: already published" if same else "Published"
        row(f"{what} {channel.build.version} to {channel.product}/{channel.tag} (sha256 {channel.build.sha256})")


def _serving(r: Repository, image: Path, product: str | None, tag: str) -> Channel | None:
    """The channel a publish of IMAGE would move, if it serves a build already; None also for an image or a name
    the publish itself will refuse (with its own reason, in its own order)."""
    try:
        product = product or default_product(inspect_image(image.read_bytes())[0])
        return r.channel(product, tag)
    except RepositoryError:
        return None


@release.command("promote")
@repo_option
@click.option("--product", required=True)
@click.option("--from", "source", required=True)
@click.option("--to", "target", required=True)
@click.option("--force", is_flag=True, help="Promote even if channel TO has a rollout (which is aborted).")
@click.option("--new-channel", is_flag=True, help="Make channel TO if it is none of main, eap, edge and is new.")
@click.option("--rollout", "steps", help="Roll the build out to TO in steps (e.g. 1,10,50,100).")
@rollout_options
def promote(
    repo: Backends, product: str, source: str, target: str, force: bool, new_channel: bool, steps: str | None,
    **options: Any,
) -> None:  # fmt: skip
    """Point channel TO at the build channel FROM has (or start a rollout of it)."""
    with open_repository(repo, create=False) as r:
        if steps:
            start_rollout(r, product, target, r.channel(product, source).build, steps, **options)
            return
        channel = r.promote(product, source, target, force, new_channel)
        row(f"Promoted {channel.build.version} from {product}/{source} to {product}/{target}")


@release.command("rollback")
@repo_option
@click.option("--product", required=True)
@click.option("--tag", required=True)
def rollback(repo: Backends, product: str, tag: str) -> None:
    """Point a channel back at its previous build."""
    with open_repository(repo, create=False) as r:
        channel = r.rollback(product, tag)
        row(f"Rolled back {product}/{tag} to {channel.build.version}")


@release.command("list")
@repo_option
def list_channels(repo: Backends) -> None:
    """Show every channel and its current build."""
    with open_repository(repo, create=False) as r:
        for c in r.channels():
            at = when(c.updated)
            security = r.security(c.build.sha256)
            signer = security.signers[0][:16] if security.signers else "unsigned"
            row(
                f"{c.product:<10} {c.tag:<8} {c.build.version:<32} {c.build.size:>9} {at} {c.build.sha256[:16]} "
                f"sv{security.secure_version} {signer}"
            )


@release.command("min-secure-version")
@repo_option
@click.option("--product", required=True)
@click.argument("level", type=int, required=False)
def min_secure_version(repo: Backends, product: str, level: int | None) -> None:
    """Never offer PRODUCT's modules a build below secure version LEVEL again (anti-rollback); without LEVEL,
    show it."""
    with open_repository(repo, create=level is not None) as r:
        if level is not None:
            set_min_secure_version(r.db, product, level, r.actor)
        row(f"{product}: builds below secure version {get_min_secure_version(r.db, product)} are never offered")


@release.command("trust")
@repo_option
@click.option("--product", help="Product whose channels may only serve builds signed by KEY.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Secure Boot V2 signing key (PEM, public or private: only its public half is used).")  # fmt: skip
@click.option("--name", help="A label for the key (default: the file name).")
@click.option("--list", "show", is_flag=True, help="List the trusted keys instead.")
def trust(repo: Backends, product: str | None, key_file: Path | None, name: str | None, show: bool) -> None:
    """Trust a signing key for a product: from then on its channels only take builds signed by a trusted key."""
    with open_repository(repo) as r:
        if show:
            keys = trusted_keys(r.db, product)
            for k in keys:
                at = when(k.added)
                row(f"{k.product:<10} {k.digest} {at} {k.name}")
            if not keys:
                row("No trusted keys: every product accepts unsigned builds.")
            return
        if product is None or key_file is None:
            raise click.UsageError("give --product and --key (or --list)")
        digest = key_digest(load_public_key(key_file.read_bytes()))
        added = trust_key(r.db, product, digest, name or key_file.name, r.actor)
        state = "now trusts" if added else "already trusted"
        row(f"{product} {state} key digest {digest.hex()}")
        digests = {k.digest for k in trusted_keys(r.db, product)}
        for c in r.channels():
            if c.product == product and not digests & set(r.security(c.build.sha256).signers):
                row(f"Warning: {product}/{c.tag} serves {c.build.version}, not signed by a trusted key: it is "
                           "offered to nobody until a signed build is published there", err=True)  # fmt: skip


@release.command("untrust")
@repo_option
@click.option("--product", required=True)
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="The key (PEM).")
@click.option("--digest", help="Or its digest, as `release trust --list` shows it.")
def untrust(repo: Backends, product: str, key_file: Path | None, digest: str | None) -> None:
    """Stop trusting a key for a product (with no key left, unsigned builds are accepted again)."""
    if (key_file is None) == (digest is None):
        raise click.UsageError("give either --key or --digest")
    try:
        raw = key_digest(load_public_key(key_file.read_bytes())) if key_file else bytes.fromhex(digest or "")
    except ValueError:
        raise click.UsageError(f"--digest {digest!r} is not a hex SHA-256") from None
    with open_repository(repo, create=False) as r:
        if not untrust_key(r.db, product, raw, r.actor):
            raise click.ClickException(f"{product} does not trust key digest {raw.hex()}")
        left = len(trusted_keys(r.db, product))
        row(f"{product} no longer trusts key digest {raw.hex()} ({left} trusted key(s) left)")


@click.group()
def token() -> None:
    """API tokens for CI systems (stored hashed)."""


@token.command("create")
@repo_option
@click.option("--name", required=True, help="Who or what uses the token (unique).")
@click.option("--role", type=click.Choice(tokens.ROLES), default="admin", show_default=True,
              help="read: GET APIs and console pages; release: also publish, promote, rollback, rollouts; "
                   "admin: also tokens and trusted keys.")  # fmt: skip
def create_token(repo: Backends, name: str, role: str) -> None:
    """Create a token and print it once."""
    with open_repository(repo) as r:
        row(tokens.create_token(r.db, name, role, r.actor))


@token.command("list")
@repo_option
def list_tokens(repo: Backends) -> None:
    """Every token's name, when it was created and last used (never the secret)."""
    with open_repository(repo, create=False) as r:
        records = tokens.list_tokens(r.db)
    for record in records:
        last = when(record.last_used) if record.last_used else "never"
        row(f"{record.name:<24} {record.role:<8} created {when(record.created)}  last used {last}")
    if not records:
        row("No tokens. Create one with `ovota token create --name NAME`.")


@token.command("revoke")
@repo_option
@click.argument("name")
def revoke_token(repo: Backends, name: str) -> None:
    """Delete the token called NAME: the API refuses it at once and its console sessions end."""
    with open_repository(repo, create=False) as r:
        tokens.revoke_token(r.db, name, r.actor)
    row(f"Revoked token {name}")


release.add_command(waypoint)
