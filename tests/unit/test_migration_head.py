"""The start-up check's reading of the migration scripts' head (no database, no Alembic)."""

from __future__ import annotations

from icefloe.migrations import head_of


def test_the_head_is_the_revision_no_script_names_as_its_parent() -> None:
    scripts = [
        'revision = "0001"\ndown_revision = None\n',
        'revision = "0002"\ndown_revision = "0001"\n',
        'revision: str = "0003"\ndown_revision: str | None = "0002"\n',  # the annotated template
    ]
    assert head_of(scripts) == "0003"


def test_a_merge_revision_names_both_parents() -> None:
    scripts = [
        'revision = "a"\ndown_revision = None\n',
        'revision = "b"\ndown_revision = "a"\n',
        'revision = "c"\ndown_revision = "a"\n',
        "revision = 'm'\ndown_revision = ('b', 'c')\n",
    ]
    assert head_of(scripts) == "m"


def test_two_heads_leave_the_decision_to_alembic() -> None:
    scripts = ['revision = "a"\ndown_revision = None\n', 'revision = "b"\ndown_revision = "a"\n']
    scripts.append('revision = "c"\ndown_revision = "a"\n')
    assert head_of(scripts) is None
