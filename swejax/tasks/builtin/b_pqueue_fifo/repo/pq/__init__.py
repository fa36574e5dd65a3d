"""A small priority queue."""
from .queue import PriorityQueue

__all__ = ["PriorityQueue"]
