"""The report SQL shipped with the package, read with importlib.resources (works from a wheel too)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

ANALYTICS_SQL = "analytics_v1.sql"


@lru_cache(maxsize=4)
def read_sql(name: str = ANALYTICS_SQL) -> str:
    return resources.files("schemas").joinpath(name).read_text(encoding="utf-8")


def sql_sections(name: str = ANALYTICS_SQL) -> dict[str, str]:
    """The `-- name: X` sections of a SQL file, by name."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in read_sql(name).splitlines():
        if line.startswith("-- name: "):
            current = sections[line.removeprefix("-- name: ").strip()] = []
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}
