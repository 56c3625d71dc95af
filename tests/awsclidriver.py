"""The AWS CLI run many times in one process: a driver for tests.

Started once as ``python -m tests.awsclidriver`` (with the CLI's credentials in
its environment), it reads one JSON request a line on stdin and answers one
JSON line on stdout:

- ``{"argv": [...]}``: ``aws ARGV`` as a shell would run it (a new
  ``create_clidriver()`` each time, as each ``aws`` process has), answered
  ``{"rc": ..., "stdout": ..., "stderr": ..., "argv": [...]}``.
- ``{"service": S, "operation": Op, "params": {...}, "endpoint": URL}``: the
  same, with the command line built from boto3-style parameters: the
  operation's own CLI command, each parameter as the option the CLI's
  argument table gives it (``--queue-url URL``, ``--start-from-head``,
  ``--attribute-names A B``, structures and lists of them as JSON); a
  command that writes a streamed payload to an ``outfile`` is given a
  temporary one, and the payload is answered in base64 under its member.
- ``{"commands": [service, ...]}``: per service, each operation's CLI
  command (``{"sqs": {"CreateQueue": "create-queue", ...}}``).

Why one process: the AWS CLI takes about half a second to start (the
interpreter, its imports, its model files), and a test that runs every served
operation, some more than once, would spend over a minute starting it. Each
command still gets a driver and a session of its own, as an ``aws`` process
has; only the loader of botocore's model files, a cache of files that never
change, is shared (it makes a command three times faster).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from awscli.clidriver import create_clidriver

#: The model files' loader every driver shares (see above).
LOADER = create_clidriver().session.get_component("data_loader")


def fresh_driver() -> Any:
    """A new ``CLIDriver``, as ``aws`` makes at its start, with the shared loader."""
    driver = create_clidriver()
    driver.session.register_component("data_loader", LOADER)
    return driver


@functools.cache
def service_commands(service: str) -> dict[str, Any]:
    """The AWS CLI's command for each operation of ``service`` it has one for."""
    table = fresh_driver()._get_command_table()[service]._get_command_table()
    return {
        command._operation_model.name: command
        for command in table.values()
        if getattr(command, "_operation_model", None) is not None
    }


def commands(services: list[str]) -> dict[str, dict[str, str]]:
    """Per service, the operations the AWS CLI has a command for, and the command."""
    return {
        service: {op: command.name for op, command in service_commands(service).items()}
        for service in services
    }


def command_line(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """The ``aws`` arguments that send ``params`` to ``operation`` (the command's
    argument table read from a driver kept for that; each command runs in its own)."""
    command = service_commands(service)[operation]
    options: dict[str, Any] = {}
    for argument in command.arg_table.values():  # a boolean's --flag comes before --no-flag
        member = getattr(argument, "_serialized_name", None)
        if member is not None and getattr(argument, "argument_model", None) is not None:
            options.setdefault(member, argument)
    argv = [service, command.name]
    for member, value in params.items():
        argument = options[member]
        kind = argument.argument_model.type_name
        if kind == "boolean":
            argv.append(argument.cli_name if value else "--no-" + argument.cli_name[2:])
            continue
        argv.append(argument.cli_name)
        if kind == "list" and argument.argument_model.member.type_name not in (
            "structure",
            "map",
            "list",
        ):
            argv.extend(str(item) for item in value)
        elif kind in ("structure", "map", "list"):
            argv.append(json.dumps(value))
        else:
            argv.append(str(value))
    return argv


def run(argv: list[str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = fresh_driver().main(argv)
        except SystemExit as exit:  # argparse's usage errors
            rc = exit.code if isinstance(exit.code, int) else 255
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "argv": argv}


def answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        return _answer(request)
    except Exception as error:  # a request this driver cannot make: the test says why
        return {"rc": 254, "stdout": "", "stderr": f"driver: {error!r}", "argv": []}


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    if "commands" in request:
        return {"commands": commands(request["commands"])}
    if "argv" in request:
        return run(request["argv"])
    argv = command_line(request["service"], request["operation"], request["params"])
    command = service_commands(request["service"])[request["operation"]]
    if "outfile" not in command.arg_table:
        return run(["--endpoint-url", request["endpoint"], *argv])
    # A streamed payload (GetCodeBindingSource's Body) goes to the file the
    # CLI must be given; it is answered in base64, as the CLI shows blobs.
    with tempfile.TemporaryDirectory() as directory:
        outfile = Path(directory) / "payload"
        done = run(["--endpoint-url", request["endpoint"], *argv, str(outfile)])
        if done["rc"] == 0:
            printed = json.loads(done["stdout"]) if done["stdout"].strip() else {}
            member = command._operation_model.output_shape.serialization["payload"]
            printed[member] = base64.b64encode(outfile.read_bytes()).decode()
            done["stdout"] = json.dumps(printed)
        return done


def main() -> None:
    for line in sys.stdin:
        sys.stdout.write(json.dumps(answer(json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
