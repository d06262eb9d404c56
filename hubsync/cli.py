"""The `hubsync` command line: entry points only; the work lives in the packages."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

import click
from rich.console import Console

from hubsync.config import Config, ConfigError

err = Console(stderr=True)


def load_config() -> Config:
    try:
        return Config.from_environ()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


class _Group(click.Group):
    """The command group; the one place where "no Redis to talk to" (down, unreachable, or
    hubsync not running) or a refused command becomes one line on stderr and exit status 1, and a
    bad setting a usage error, whatever the command, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from events.activations import CommandRejected
        from events.redis_server import RedisUnavailable

        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # a setting the user can fix: a usage error, exit 2
            raise click.UsageError(str(exc)) from None
        except (RedisUnavailable, CommandRejected) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="hubsync")
def main() -> None:
    """hubsync: keep HubSpot contacts in step with a CDP's audiences and calculated attributes.

    Run `hubsync demo` to see it work end to end on this machine, with nothing else installed.
    """


@main.command()
@click.argument("file", type=click.File("rb"))
@click.option("--batch", default=500, show_default=True, help="Events per Redis round trip.")
def publish(file: BinaryIO, batch: int) -> None:  # click.File("rb"): a binary file or stdin
    """Publish CDP events from a JSON Lines FILE ('-' for standard input).

    Each line is one event of the wire contract (see README). Bad lines are reported with their
    line number and skipped; the good ones are still published.
    """
    from events.streams import NotStarted
    from hubsync.config import with_redis
    from hubsync.publish import publish_lines

    config = load_config()

    from rich.progress import TaskID

    from hubsync.progress import progress_bars

    try:
        size = os.fstat(file.fileno()).st_size if file.seekable() else None
    except (OSError, AttributeError):
        size = None
    progress = progress_bars(
        err,
        counts="bytes",
        details="{task.fields[events]} events",
        transient=True,
        disable=not err.is_terminal or not size,
    )

    def counted(task: TaskID) -> Iterator[bytes]:
        for line in file:
            progress.advance(task, len(line))
            yield line

    async def run(client: Any) -> int:
        try:
            with progress:
                task = progress.add_task("publishing", total=size, events=0)
                report = await publish_lines(
                    client,
                    config.keys,
                    counted(task),
                    batch=batch,
                    on_progress=lambda n: progress.update(task, events=n),
                    max_entry_bytes=config.max_entry_bytes,
                )
        except NotStarted as exc:
            raise click.ClickException(str(exc)) from None
        for bad in report.bad[:50]:
            err.print(f"[yellow]line {bad.number}[/]: {bad.reason}", highlight=False)
        if len(report.bad) > 50:
            err.print(f"... and {len(report.bad) - 50} more bad lines")
        click.echo(f"published {report.published} events; {len(report.bad)} bad lines skipped")
        return 1 if report.bad else 0

    sys.exit(with_redis(config, run))


@main.command()
@click.option(
    "--api-host",
    default=None,
    help="Where the HTTP API and console listen (wins over HUBSYNC_API_ADDRESS; default 127.0.0.1).",
)
@click.option(
    "--api-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="The API's port (wins over HUBSYNC_API_ADDRESS; default 8077, 0 picks a free one).",
)
def up(api_host: str | None, api_port: int | None) -> None:
    """Run hubsync: join RAY_ADDRESS or start a local Ray, connect Redis, serve the HTTP API and
    console, run until Ctrl-C/SIGTERM."""
    import signal
    import threading
    import time

    from hubsync.service import IncompatibleRay, Service

    config = load_config()
    api = _api_server(config, api_host, api_port)  # a taken port fails before Ray starts
    service = Service(config)
    stop = threading.Event()
    try:
        try:
            info = service.start()
        except IncompatibleRay as exc:
            raise click.ClickException(str(exc)) from None
        api.start()
        # After Ray started: its driver installs a SIGTERM handler of its own that exits at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        where = service.dashboard_url or "the cluster's dashboard"
        click.echo(
            f"hubsync is up: {info['partitions']} partitions, {info['activations']} activations; "
            f"Ray dashboard: {where}; API and console: {api.url}; stop with Ctrl-C",
            err=False,
        )
        sys.stdout.flush()
        stop.wait()
        click.echo("stopping: checkpointing activations ...")
    finally:
        stopping = time.monotonic()
        try:
            api.stop()
        finally:
            service.stop()
    click.echo(f"stopped in {time.monotonic() - stopping:.1f}s")


def _api_server(config: Config, host: str | None, port: int | None) -> Any:
    """The API server `up` runs (not started yet): flags win over HUBSYNC_API_ADDRESS."""
    from hubsync.api import ApiServer

    try:
        return ApiServer.from_config(config, environ=os.environ, host=host, port=port)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@main.command("api-key")
def api_key() -> None:
    """Print the key for the HTTP API and the console (HUBSYNC_API_KEY, or HUBSYNC_HOME/api.key,
    created on first use)."""
    from hubsync.api import load_or_create_api_key

    config = load_config()
    try:
        click.echo(load_or_create_api_key(config.home, os.environ))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.option(
    "--contacts", default=8_000, show_default=True, help="How many CDP contacts the story has."
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Leave everything up (the console at its URL, the Ray dashboard) until Ctrl-C.",
)
def demo(contacts: int, keep_running: bool) -> None:
    """Run everything embedded (Ray, Redis, the HubSpot emulator) end to end, then stop."""
    from hubsync.demo import run_demo

    sys.exit(run_demo(contacts=contacts, keep_running=keep_running))


def _register() -> None:
    from hubsync.activation_cmd import activation
    from hubsync.status import status

    main.add_command(activation)
    main.add_command(status)
    try:
        from hubsync.emulator_cmd import emulator
    except ImportError:
        return
    main.add_command(emulator)


_register()

__all__ = ["main"]


if __name__ == "__main__":
    main()
