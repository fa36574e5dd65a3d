from .playlist import Playlist, Track

__all__ = ["Playlist", "Track"]
