"""Logging set-up shared by the gateway and the worker: plain text, or one JSON object per line.

Each JSON line carries `job_id` when the record is about a job: given as `extra={"job_id": ...}`,
or found among the message's arguments (every log call names its job as an argument). Text that
looks like a key (`sk-...`, `Bearer ...`) is masked. Prompts are never logged, except by the
gateway when the `log_prompts` debug setting is on.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

from .protocol import JOB_ID_PATTERN
from .settings import Settings

SECRET_PATTERNS = (
    (re.compile(r"sk-[A-Za-z0-9_\-]{6,}"), "sk-***"),
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-]+"), "Bearer ***"),
)
# Loggers of libraries whose lines should come out in the same format.
FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "kombu")


def redact(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _job_id(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "job_id", None)
    if explicit:
        return str(explicit)
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        if isinstance(arg, str) and JOB_ID_PATTERN.fullmatch(arg):
            return arg
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        job_id = _job_id(record)
        if job_id:
            doc["job_id"] = job_id
        if record.exc_info:
            doc["error_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            doc["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(settings: Settings, stream=None) -> None:
    """Send the product's logs (and uvicorn's and Celery's) to `stream` in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level.upper())
    for name in FOREIGN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
