import datetime as dt

import pytest

from icefloe.errors import ConfigurationError
from icefloe.scheduler import Schedule, latest_due

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_interval_first_fire_is_one_interval_after_creation() -> None:
    every10 = Schedule(interval_seconds=600)
    assert latest_due(every10, anchor=T0, last_fire=None, now=at(9)) is None
    assert latest_due(every10, anchor=T0, last_fire=None, now=at(10)) == at(10)


def test_missed_fires_coalesce_into_the_latest() -> None:
    every10 = Schedule(interval_seconds=600)
    # Down from 12:10 to 13:05: one run, for 13:00, not six.
    assert latest_due(every10, anchor=T0, last_fire=at(10), now=at(65)) == at(60)
    # Already fired for 13:00: nothing more until 13:10.
    assert latest_due(every10, anchor=T0, last_fire=at(60), now=at(65)) is None


def test_cron_fires_at_its_ticks_including_exactly_now() -> None:
    every5 = Schedule(cron="*/5 * * * *")
    assert latest_due(every5, anchor=T0, last_fire=None, now=at(4.9)) is None
    assert latest_due(every5, anchor=T0, last_fire=None, now=at(5)) == at(5)
    assert latest_due(every5, anchor=T0, last_fire=at(5), now=at(7)) is None
    assert latest_due(every5, anchor=T0, last_fire=at(5), now=at(31)) == at(30)


def test_cron_is_evaluated_in_the_schedule_time_zone() -> None:
    daily_9am_paris = Schedule(cron="0 9 * * *", timezone="Europe/Paris")
    anchor = dt.datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    now = dt.datetime(2026, 7, 1, 7, 30, tzinfo=UTC)  # 09:30 in Paris (UTC+2 in summer)
    assert latest_due(daily_9am_paris, anchor=anchor, last_fire=None, now=now) == dt.datetime(
        2026, 7, 1, 7, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule(cron="61 * * * *"),
        Schedule(cron="* * *"),
        Schedule(interval_seconds=0),
        Schedule(cron="* * * * *", interval_seconds=60),
        Schedule(cron="* * * * *", timezone="Mars/Olympus"),
    ],
)
def test_invalid_schedules_are_configuration_errors(schedule: Schedule) -> None:
    with pytest.raises(ConfigurationError):
        schedule.validate()
