"""``cmkd-doctor schema``: the JSON Schema of a document cmkd-doctor writes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cmkd_doctor.cli._common import out, print_json
from cmkd_doctor.schemas import DOCUMENTS, SCHEMA_VERSION, schema


def schema_command(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME",
        help=f"Document: {', '.join(DOCUMENTS)} [default: list them].")
    ] = None,
) -> None:
    """Print the JSON Schema (draft 2020-12) of one of the documents cmkd-doctor writes,
    or list them. Every document names its schema and version in "schema" and
    "schema_version"."""
    if name is None:
        table = Table(title=f"JSON documents (schema version {SCHEMA_VERSION})",
                      title_justify="left")
        for column in ("schema", "what", "where"):
            table.add_column(column)
        for key, (what, where) in DOCUMENTS.items():
            table.add_row(key, what, where)
        out.print(table)
        return
    print_json(schema(name))
