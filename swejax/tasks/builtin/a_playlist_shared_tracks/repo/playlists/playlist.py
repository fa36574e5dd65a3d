from collections import namedtuple

Track = namedtuple("Track", "title artist seconds")


class Playlist:
    def __init__(self, name, tracks=[]):
        self.name = name
        self.tracks = tracks

    def add(self, track):
        """Append ``track``; return False if it is already in the playlist."""
        if track in self.tracks:
            return False
        self.tracks.append(track)
        return True

    def remove(self, track):
        self.tracks.remove(track)

    def duration(self):
        return sum(track.seconds for track in self.tracks)

    def format_duration(self):
        minutes, seconds = divmod(self.duration(), 60)
        return "%d:%02d" % (minutes, seconds)

    def by_artist(self, artist):
        return [track for track in self.tracks if track.artist == artist]

    def __len__(self):
        return len(self.tracks)
