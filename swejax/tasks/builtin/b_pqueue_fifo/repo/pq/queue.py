"""Min-priority queue built on :mod:`heapq`."""
import heapq


class PriorityQueue:
    """Lower priority values are served first.

    Items pushed with the same priority are served in the order they were
    pushed (FIFO). Items themselves never need to be comparable.
    """

    def __init__(self):
        self._heap = []

    def push(self, item, priority=0):
        heapq.heappush(self._heap, (priority, item))

    def pop(self):
        if not self._heap:
            raise IndexError("pop from empty priority queue")
        return heapq.heappop(self._heap)[-1]

    def peek(self):
        if not self._heap:
            raise IndexError("peek at empty priority queue")
        return self._heap[0][-1]

    def drain(self):
        """Pop every item, returning them in service order."""
        out = []
        while self._heap:
            out.append(self.pop())
        return out

    def __len__(self):
        return len(self._heap)

    def __bool__(self):
        return bool(self._heap)
