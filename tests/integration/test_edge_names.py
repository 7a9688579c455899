"""Name rules apply to new names: an ingestion made before them stays changeable."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from icefloe import ingestions
from icefloe.errors import ConfigurationError
from icefloe.runtime import Runtime


def test_an_ingestion_named_before_the_rules_can_still_be_changed_but_not_renamed_badly(
    rt: Runtime, bucket: str
) -> None:
    with rt.db.begin() as conn:  # as an older icefloe stored it
        conn.execute(
            sa.text(
                "INSERT INTO ingestions (name, source, format, table_identifier) "
                "VALUES ('2024', :source, 'jsonl', 'legacy.t')"
            ),
            {"source": f"s3://{bucket}/in/"},
        )
    assert ingestions.update(rt.db, "2024", {"max_retries": 5}).max_retries == 5
    with pytest.raises(ConfigurationError, match="all digits"):
        ingestions.update(rt.db, "2024", {"name": "2025"})
    assert ingestions.update(rt.db, "2024", {"name": "legacy-2024"}).name == "legacy-2024"
