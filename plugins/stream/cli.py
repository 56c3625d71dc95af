"""``pipelines stream ...``: the stream API (``StreamStore``) on the command line."""

from __future__ import annotations

import click

stream_group = click.Group("stream", help="Durable streams with Kinesis' semantics.")
