"""Where the command line's log lines go: rich lines on a terminal, plain timestamped lines
elsewhere (a log file, ``ray job logs``, ``kubectl logs``), progress lines on stdout."""

from __future__ import annotations

import logging
import os
import sys

from distmeta.cli.progress import console, progress_log

CHATTY = ("ray", "mlflow", "alembic", "urllib3", "matplotlib", "PIL", "filelock", "py.warnings")


class Redacting(logging.Filter):
    """Credentials never reach a log line (:func:`distmeta.uri.redact`), whoever logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        from distmeta.uri import redact

        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def plain_formatter() -> logging.Formatter:
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")


def setup_logging(verbose: bool) -> None:
    """A terminal gets rich log lines and a live bar; anything else plain lines, with the
    progress lines on stdout. Ray's and MLflow's own INFO lines are held back unless ``-v``."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False, console=console)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(plain_formatter())
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(plain_formatter())
        out.addFilter(lambda record: record.name == progress_log.name)
        root.addHandler(out)
    handler.addFilter(lambda record: record.name != progress_log.name)  # the bar (or stdout) shows it
    root.addHandler(handler)
    for h in root.handlers:
        h.addFilter(Redacting())
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:  # MLflow resets its loggers' level from this when it is imported
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
