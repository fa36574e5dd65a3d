import pytest

from agenda import ConflictError, Scheduler, format_time, parse_time


def test_parse_24h_and_pm():
    assert parse_time("14:05") == 14 * 60 + 5
    assert parse_time("2:05 pm") == 14 * 60 + 5
    assert parse_time("12:30 PM") == 12 * 60 + 30
    assert parse_time("9:00am") == 9 * 60


def test_parse_invalid():
    for bad in ["25:00", "13:00 pm", "9:75", "noon"]:
        with pytest.raises(ValueError):
            parse_time(bad)


def test_format_time():
    assert format_time(0) == "00:00"
    assert format_time(14 * 60 + 5) == "14:05"


def test_agenda_sorted_and_conflicts():
    s = Scheduler()
    s.add("lunch", "12:00 pm", "1:00 pm")
    s.add("standup", "9:00 am", "9:15 am")
    with pytest.raises(ConflictError):
        s.add("call", "12:30", "13:30")
    assert s.agenda() == ["standup", "lunch"]


def test_free_slots():
    s = Scheduler()
    s.add("a", "9:00", "10:00")
    s.add("b", "10:00", "11:30")
    assert s.free_slots("8:00", "12:00") == [(480, 540), (690, 720)]
