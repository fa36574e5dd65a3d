from playlists import Playlist, Track

A = Track("Intro", "Band", 65)
B = Track("Song", "Band", 200)
C = Track("Other", "Solo", 30)


def test_add_and_duplicates():
    p = Playlist("mix", [A])
    assert p.add(B) is True
    assert p.add(A) is False
    assert len(p) == 2


def test_duration_formatting():
    p = Playlist("mix", [A, B, C])
    assert p.duration() == 295
    assert p.format_duration() == "4:55"


def test_by_artist():
    p = Playlist("mix", [A, B, C])
    assert p.by_artist("Band") == [A, B]


def test_remove():
    p = Playlist("mix", [A, B])
    p.remove(A)
    assert p.tracks == [B]
