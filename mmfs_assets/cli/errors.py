"""One error style for every `mmfs` command: a sentence, what to do, exit code 2 or 1, no traceback.

Commands raise; :class:`ErrorHandlingGroup` (the Typer app's click group) catches what escapes a command
and prints it through :func:`explain`:

- exit code **2**: the request cannot work as given (a bad option, an unknown drop, version, tag or asset,
  no table at ``MMFS_TABLE_URI``, a bad setting, bad SQL);
- exit code **1**: it was valid but failed (a pipeline step failed, the table or its storage cannot be
  read, a model cannot be loaded, anything unexpected);
- ``mmfs --debug ...`` (or ``MMFS_DEBUG=1``) adds the traceback.

Lance's errors carry the Rust source locations of the library's build (``/home/runner/work/lance/...rs:653:26``);
:func:`clean_message` removes them and keeps the first line.
"""

from __future__ import annotations

import os
import re
import traceback

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from mmfs_assets.cli.consoles import console

_RUST_LOCATION = re.compile(r",?\s*/\S+?\.rs:\d+:\d+")
MAX_MESSAGE = 400


class CliError(Exception):
    """A failure to report as one message (exit code 1) with an optional hint (what to do)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class CliUsageError(CliError):
    """The request cannot work as given (exit code 2)."""

    exit_code = 2


def clean_message(e: BaseException | str) -> str:
    """The first line of an error, without Lance's Rust source locations, at most :data:`MAX_MESSAGE` chars."""
    text = _RUST_LOCATION.sub("", str(e)).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__ if isinstance(e, BaseException) else "")
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


_debug = [False]


def set_debug(on: bool) -> None:
    _debug[0] = on


def debug_enabled() -> bool:
    return _debug[0] or os.environ.get("MMFS_DEBUG", "").lower() in ("1", "true", "yes")


def explain(e: BaseException) -> CliError:
    """``e`` as the one message (and exit code) the CLI prints."""
    if isinstance(e, CliError):
        return e
    from mmfs_assets.features.models import ModelUnavailableError
    from mmfs_assets.instance.home import InstanceDamagedError, InstanceError
    from mmfs_loader.contract.table import TableNotFoundError, VersionNotFoundError

    if isinstance(e, TableNotFoundError):
        return CliUsageError(clean_message(e), "set MMFS_TABLE_URI to the table, or run `mmfs demo` to make one")
    if isinstance(e, InstanceDamagedError):
        return CliError(str(e))
    if isinstance(e, (VersionNotFoundError, InstanceError)):
        return CliUsageError(clean_message(e))
    if isinstance(e, ModelUnavailableError):
        return CliError(str(e))
    from mmfs_loader.contract.query import ReadOnlyError

    if isinstance(e, ReadOnlyError):
        return CliUsageError(clean_message(e), SQL_READ_ONLY_HINT)
    if _storage_error(e):  # before SQL errors: DuckDB wraps a failed read of the table as its own error
        from mmfs_assets.settings import Settings

        try:
            uri = Settings.from_env().table_uri
        except ValueError:
            uri = "MMFS_TABLE_URI"
        message = clean_message(e).removeprefix("Invalid Input Error: ").removeprefix("LanceError(IO): ")
        if "permission denied" in message.lower() or "os error 13" in message:  # the path is right, the rights are not
            return CliError(f"cannot write the table at {uri}: {message}",
                            "this user may read but not write there: run as a user who may, or give write access "
                            "to the table's folder (or the storage credentials' write permission)")
        if "no space left on device" in message.lower() or "os error 28" in message:
            return CliError(f"cannot write the table at {uri}: {message}",
                            "free space on the table's file system, then run it again")
        return CliError(
            f"cannot access the table at {uri}: {message}",
            "check MMFS_TABLE_URI and, for object storage, MMFS_STORAGE_OPTIONS (endpoint, region, bucket, credentials)",
        )
    try:
        import duckdb

        if isinstance(e, duckdb.Error):
            return _sql_error(e)
    except ImportError:  # pragma: no cover - duckdb is a dependency
        pass
    if isinstance(e, ValueError) and _raised_by_mmfs(e):  # our own checks of what was asked (names, versions, settings)
        return CliUsageError(clean_message(e))
    return CliError(f"unexpected error: {type(e).__name__}: {clean_message(e)}", "rerun with `mmfs --debug ...` for the traceback")


SQL_READ_ONLY_HINT = ("the pipeline writes the table (`mmfs materialize`; `mmfs rollback --to` undoes commits); no "
                      "option lets SQL change it (--unsafe-allow-files only lets SQL read and write other files)")
SQL_FILES_HINT = ("`mmfs sql` cannot read or write files, load extensions or change DuckDB settings unless asked: "
                  "add --unsafe-allow-files for SQL you trust (e.g. COPY ... TO 'rows.parquet')")
# the lines after DuckDB's first that say what to type: 'Candidate bindings: "height", ...', 'Did you mean "videos"?'
_SQL_SUGGESTIONS = ("Candidate bindings:", "Did you mean")


def _sql_error(e: BaseException) -> CliUsageError:
    """A DuckDB error: its first line and its suggestions; the opt-in named when the lock-down refused."""
    first = clean_message(e)
    said = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip().startswith(_SQL_SUGGESTIONS)]
    message = "\n".join([f"SQL error: {first}", *said])
    import duckdb

    locked = ("disabled by configuration" in first or "configuration has been locked" in first
              or isinstance(e, duckdb.PermissionException))
    return CliUsageError(message, SQL_FILES_HINT if locked else None)


def _raised_by_mmfs(e: BaseException) -> bool:
    """Whether the innermost frame that raised ``e`` is MMFS code (a validation), not a library's."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return "/mmfs_assets/" in name or "/mmfs_loader/" in name


def _storage_error(e: BaseException) -> bool:
    """An I/O failure of Lance or the object store (not a bad request)."""
    text = str(e)
    return (isinstance(e, OSError) or "LanceError(IO)" in text or "object_store" in text
            or "S3 error" in text or type(e).__module__.startswith("lance"))  # local OSErrors are I/O too


def report(e: BaseException, console: Console) -> int:
    """Print ``e`` the CLI way; returns the exit code."""
    err = explain(e)
    if debug_enabled():
        console.print("".join(traceback.format_exception(e)), markup=False, highlight=False)
    # Text, not markup: messages quote user input and file names ("[/b]", ":fire:") that must print as they are
    console.print(Text.assemble(("error:", "red"), " ", str(err)), highlight=False)
    if err.hint:
        console.print(Text.assemble(("hint:", "dim"), " ", str(err.hint)), highlight=False)
    return err.exit_code


class ErrorHandlingGroup(TyperGroup):
    """The app's click group: an exception escaping a command becomes :func:`report`'s message."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - every error gets the same style
            if isinstance(e, (typer.Exit, typer.Abort)) or type(e).__module__.startswith(("typer", "click")):
                raise  # exit codes and usage errors (exit code 2) of the CLI framework itself
            raise typer.Exit(report(e, console)) from None
