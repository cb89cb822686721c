"""The CLI's two consoles: ``out`` (stdout: results, tables, JSON) and ``console`` (stderr: progress, notes,
warnings, errors), shared by every command module and the error handler."""

from rich.console import Console

out = Console()
console = Console(stderr=True)
