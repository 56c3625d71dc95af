"""``pipelines queue ...``: the queue API (``QueueStore``) on the command line.

Each command opens the state database of a pipeline (running or not: SQLite
lets both use it at once; only ``create`` makes a new one), calls one
``QueueStore`` method and prints its answer as ``--output`` says
(``pipelines.clikit``).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipelines import clikit
from pipelines.clikit import echo_output, output_option, parse_pairs, read_argument, state_options
from plugins.queue.store import QueueStore, SendEntry

T = TypeVar("T")


def with_store(
    config: str | None,
    state: str | None,
    call: Callable[[QueueStore], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    return clikit.with_store(QueueStore, config, state, call, create=create)


@click.group("queue")
def queue_group() -> None:
    """Durable queues with SQS's semantics, in a pipeline's state database."""


@queue_group.command("list")
@click.option("--prefix", default="", help="Only queues whose name starts with this.")
@state_options
@output_option
def list_command(prefix: str, config: str | None, state: str | None, output: str) -> None:
    """List the queues' names."""
    names = with_store(config, state, lambda store: store.list_queues(prefix))
    echo_output(names, output, column="QueueName")


@queue_group.command("create")
@click.argument("name")
@click.option(
    "--attribute",
    "-a",
    "attributes",
    multiple=True,
    help="KEY=VALUE, e.g. visibility_timeout=60 or"
    ' redrive_policy=\'{"dead_letter_queue": "dlq", "max_receive_count": 3}\'.',
)
@state_options
@output_option
def create_command(
    name: str, attributes: tuple[str, ...], config: str | None, state: str | None, output: str
) -> None:
    """Create queue NAME (a FIFO queue's name ends in .fifo); print its attributes."""
    given = parse_pairs(attributes, "--attribute")
    created = with_store(config, state, lambda store: store.create_queue(name, given), create=True)
    echo_output({"QueueName": name, "Attributes": created.to_json()}, output)


@queue_group.command("send")
@click.argument("name")
@click.argument("bodies", nargs=-1)
@click.option(
    "--input", "input_path", default=None, help="A file of bodies, one per line (- stdin)."
)
@click.option("--attribute", "-a", "attributes", multiple=True, help="Message attribute KEY=VALUE.")
@click.option("--group-id", default=None, help="MessageGroupId (FIFO).")
@click.option("--deduplication-id", default=None, help="MessageDeduplicationId (FIFO).")
@click.option("--delay", type=click.IntRange(0, 900), default=None, help="DelaySeconds.")
@state_options
@output_option
def send_command(
    name: str,
    bodies: tuple[str, ...],
    input_path: str | None,
    attributes: tuple[str, ...],
    group_id: str | None,
    deduplication_id: str | None,
    delay: int | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Send each BODY (or each line of --input) to queue NAME; print the list
    of results (MessageId, or Code and Message); exit 1 when one failed."""
    texts = [read_argument(body) for body in bodies]
    if input_path is not None:
        try:
            content = sys.stdin.read() if input_path == "-" else Path(input_path).read_text()
        except OSError as exc:
            raise click.UsageError(f"cannot read {input_path}: {exc.strerror}") from None
        texts.extend(line for line in content.splitlines() if line.strip())
    if not texts:
        raise click.UsageError("give at least one BODY, or --input")
    message_attributes = parse_pairs(attributes, "--attribute")
    if deduplication_id is not None and len(texts) > 1:
        raise click.UsageError("--deduplication-id names one message: send one BODY with it")

    async def send(store: QueueStore) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        for start in range(0, len(texts), 10):
            entries = [
                SendEntry(
                    text,
                    message_attributes,
                    delay,
                    group_id,
                    deduplication_id,
                    id=str(start + offset),
                )
                for offset, text in enumerate(texts[start : start + 10])
            ]
            sent, failed = await store.send_batch(name, entries)
            answers.extend(result.to_json() for result in sent)
            answers.extend(error.to_json() for error in failed)
        return sorted(answers, key=lambda answer: int(answer["Id"]))

    answers = with_store(config, state, send)
    echo_output(answers, output)
    if any("Code" in answer for answer in answers):
        raise SystemExit(1)


@queue_group.command("receive")
@click.argument("name")
@click.option("-n", "max_messages", type=click.IntRange(1, 10), default=1, show_default=True)
@click.option("--wait", type=click.FloatRange(0, 20), default=None, help="Long-poll seconds.")
@click.option("--visibility-timeout", type=click.IntRange(0, 43_200), default=None)
@click.option("--delete", is_flag=True, help="Delete what was received (consume it).")
@state_options
@output_option
def receive_command(
    name: str,
    max_messages: int,
    wait: float | None,
    visibility_timeout: int | None,
    delete: bool,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Receive up to -n messages from queue NAME; print the list received."""

    async def receive(store: QueueStore) -> list[dict[str, Any]]:
        messages = await store.receive(
            name, max_messages, wait_time=wait, visibility_timeout=visibility_timeout
        )
        if delete and messages:
            handles = [(str(n), message.receipt_handle) for n, message in enumerate(messages)]
            await store.delete_batch(name, handles)
        return [message.to_json() for message in messages]

    echo_output(with_store(config, state, receive), output)


@queue_group.command("delete")
@click.argument("name")
@click.argument("receipt_handles", nargs=-1, required=True)
@state_options
def delete_command(
    name: str, receipt_handles: tuple[str, ...], config: str | None, state: str | None
) -> None:
    """Delete messages from queue NAME by the receipt handles of their last receive."""

    async def delete(store: QueueStore) -> None:
        for handle in receipt_handles:
            await store.delete(name, handle)

    with_store(config, state, delete)


@queue_group.command("purge")
@click.argument("name")
@state_options
@output_option
def purge_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """Delete every message in queue NAME (once per 60 seconds); print how many."""
    purged = with_store(config, state, lambda store: store.purge(name))
    echo_output({"QueueName": name, "Purged": purged}, output)


@queue_group.command("stats")
@click.argument("name")
@state_options
@output_option
def stats_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """Print queue NAME's approximate counts and attributes."""
    echo_output(with_store(config, state, lambda store: store.stats(name)), output)


@queue_group.command("redrive")
@click.argument("dead_letter_queue")
@click.option("--to", "destination", default=None, help="Destination (default: each source).")
@click.option("--rate", type=click.IntRange(1, 500), default=500, show_default=True)
@state_options
@output_option
def redrive_command(
    dead_letter_queue: str,
    destination: str | None,
    rate: int,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Move the messages in DEAD_LETTER_QUEUE back to where they came from;
    print how many moved (the progress on a terminal's stderr)."""

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            click.echo(f"\rmoved {done} of {total}", err=True, nl=done == total)

    moved = with_store(
        config,
        state,
        lambda store: store.move_messages(
            dead_letter_queue, destination, rate=rate, progress=progress
        ),
    )
    echo_output({"QueueName": dead_letter_queue, "Moved": moved}, output)
