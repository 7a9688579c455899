"""Where an ingestion's rows go: the table created on first use, and what a file whose columns
differ from the table's does under the ingestion's ``--schema-evolution`` policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from icefloe import evolution
from icefloe.errors import PermanentFileError, SchemaChangePendingError
from icefloe.evolution import RESCUED_COLUMN, SchemaDiff
from icefloe.schema import check_schema, merged_schema, normalise_type, table_arrow_schema
from icefloe.settings import DEFAULT_MAX_NESTING
from icefloe.tables import add_columns, create_table, load_table

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolved:
    """The table a file's rows go to, as :meth:`TableDestination.resolve` decided it."""

    table: Table  # evolved in memory only (add-columns): the batch's commit applies the change
    created: bool = False  # the table was created for this file
    change: SchemaDiff | None = None  # the change ``table`` has over the catalog's


@dataclass(frozen=True)
class TableDestination:
    """Where an ingestion's rows go, for every engine: the table is created on first use from the
    declared schema (or the data's); a file whose columns differ from the table's is dealt with by
    the ingestion's ``--schema-evolution`` policy (see :meth:`resolve`)."""

    catalog: Catalog
    identifier: str
    declared: pa.Schema | None
    infer: bool
    max_nesting: int = DEFAULT_MAX_NESTING
    policy: str = "add-columns"

    def resolve(self, table: Table | None, data_schema: pa.Schema, uri: str = "") -> Resolved:
        """The table ``data_schema``'s rows go to (``table``: the one staged so far, if any).

        - add-columns: new columns and safe widenings are applied to a copy of the table's metadata,
          not to the catalog: the batch's commit applies them with its rows (:func:`commit_rows`);
        - approve: a difference raises :class:`SchemaChangePendingError` (the file is HELD);
        - fail: a difference fails the file (``SchemaMismatch``, naming the column);
        - rescue: the table stays as it is (conforming puts misfits into ``_rescued_data``).

        ``infer=False`` (an engine that reads only the declared columns): no change is looked for
        under add-columns. A schema no table can hold (:func:`check_schema`) fails naming ``uri`` before anything
        reaches the catalog.
        """
        check_schema(data_schema, uri or "data", self.max_nesting)
        if table is None:
            table = self.load()
        if table is None:
            schema = data_schema if self.declared is None else merged_schema(self.declared, data_schema)
            arrow = table_arrow_schema(schema, rescued=self.policy == "rescue")
            return Resolved(create_table(self.catalog, self.identifier, arrow), created=True)
        if self.policy == "rescue":
            return Resolved(_with_rescue_column(table))
        if self.policy == "add-columns" and not self.infer:
            return Resolved(table)
        if self.declared is not None:  # declared columns keep their declared types: never widened
            declared = self.declared
            data_schema = pa.schema([declared.field(f.name) if f.name in declared.names else f for f in data_schema])
        change = evolution.diff(table.schema().as_arrow(), data_schema, normalise_type)
        if not change:
            return Resolved(table)
        if self.policy == "approve":
            raise SchemaChangePendingError(evolution.held_message(uri, change), change=change)
        if self.policy == "fail":
            raise PermanentFileError(evolution.mismatch_message(uri, change), error_type="SchemaMismatch")
        log.info("staging schema change of %s: %s", self.identifier, change.describe())
        return Resolved(evolution.evolved(table, change), change=change)

    def load(self) -> Table | None:
        """The table as the catalog has it (None: not created yet); under rescue, with
        ``_rescued_data`` added first if it was made before the policy was chosen."""
        table = load_table(self.catalog, self.identifier)
        return _with_rescue_column(table) if table is not None and self.policy == "rescue" else table

    def table_for(self, table: Table | None, data_schema: pa.Schema, uri: str = "") -> Table:
        """:meth:`resolve`, with a change committed at once (engines whose writer commits files
        it did not write through pyiceberg: Spark's Parquet files are added by name)."""
        resolved = self.resolve(table, data_schema, uri)
        change = resolved.change
        if change is None:
            return resolved.table
        base = load_table(self.catalog, self.identifier) or resolved.table
        widened = [pa.field(name, new) for name, _, new in change.widened]
        return add_columns(base, pa.schema([*change.added, *widened]))


def _with_rescue_column(table: Table) -> Table:
    """``table`` with ``_rescued_data``, added if it was made before rescue was chosen."""
    if RESCUED_COLUMN in table.schema().column_names:
        return table
    return add_columns(table, pa.schema([pa.field(RESCUED_COLUMN, pa.string())]))
