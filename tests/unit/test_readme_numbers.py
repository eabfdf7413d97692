"""Every setting's default that README.md quotes is the default `Settings` has: read from the README's
Settings and Limits tables and from its prose, so a changed default without a changed README fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from tokenrelay.core.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
ALIASES = {"OPENAI_API_KEY": "openai_api_key", "OPENAI_BASE_URL": "openai_base_url"}
NOT_A_VALUE = ("(the Redis URL)", "the three examples")  # described, not quoted


def default(field: str) -> object:
    info = Settings.model_fields[field]
    return info.default_factory() if info.default is PydanticUndefined else info.default


def field_of(name: str) -> str:
    field = ALIASES.get(name) or name.removeprefix("TOKENRELAY_").lower()
    assert field in Settings.model_fields, f"README names {name}, which is no setting"
    return field


def table_rows(heading: str) -> list[list[str]]:
    section = README.split(heading, 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in ("|" + section).splitlines()]
    return [row for row in rows[2:] if len(row) >= 2]  # past the header and its rule


def pairs(names_cell: str, values_cell: str) -> list[tuple[str, str]]:
    """`A` / `B` | `1` / `2` -> (A, 1), (B, 2); one value for several names applies to each."""
    names = re.findall(r"`([A-Za-z_]+)`", names_cell)
    values = [value.strip().strip("`") for value in values_cell.split(" / ")]
    return list(zip(names, values if len(values) == len(names) else values * len(names)))


def matches(quoted: str, value: object) -> bool:
    if value is None:
        return quoted == "unset"
    if isinstance(value, bool):
        return quoted == str(value).lower()
    if isinstance(value, list):
        return [part.strip() for part in quoted.split(",")] == [str(item) for item in value] or \
            [float(part) for part in quoted.split(",")] == value
    if isinstance(value, int | float):
        number = re.match(r"[\d,]+(\.\d+)?", quoted)
        return number is not None and float(number.group(0).replace(",", "")) == value
    return quoted == str(value)


SETTINGS_TABLE = [(name, quoted) for row in table_rows("## Settings\n") for name, quoted in pairs(row[0], row[1])
                  if quoted not in NOT_A_VALUE]
LIMITS_TABLE = [(name, quoted) for row in table_rows("### Limits\n") for name, quoted in pairs(row[0], row[1])]
# Prose such as "runs up to `TOKENRELAY_WORKER_CONCURRENCY` jobs (500)" or "`TOKENRELAY_LEASE_TTL_S` (10 s)".
PROSE = re.findall(r"`TOKENRELAY_([A-Z_]+)`[^`()|\n]{0,20}\((\d[\d,]*(?:\.\d+)?)(?: s)?\)", README)


def test_the_readme_quotes_enough_defaults_to_be_worth_checking():
    assert len(SETTINGS_TABLE) >= 25 and len(LIMITS_TABLE) >= 10 and len(PROSE) >= 4
    assert ("WORKER_CONCURRENCY", "500") in PROSE  # the Deploy section, once wrong (200)


@pytest.mark.parametrize("name, quoted", SETTINGS_TABLE + LIMITS_TABLE + [(f"TOKENRELAY_{n}", q) for n, q in PROSE])
def test_each_quoted_default_is_the_settings_default(name, quoted):
    field = field_of(name)
    assert matches(quoted, default(field)), f"README says {name} defaults to {quoted!r}; Settings: {default(field)!r}"


def test_the_command_table_quotes_the_worker_default():
    quoted = re.search(r"`tokenrelay worker \[--concurrency (\d+)\]", README).group(1)
    assert int(quoted) == default("worker_concurrency")
