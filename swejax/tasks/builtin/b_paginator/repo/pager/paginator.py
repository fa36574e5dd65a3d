"""Split sequences into fixed-size, 1-based pages."""
import math


class PageOutOfRange(IndexError):
    """Raised when a requested page does not exist."""


class Paginator:
    """Split a sequence into pages of ``per_page`` items.

    Pages are numbered starting from 1, as they are shown to end users.
    An empty sequence still has a single (empty) page.
    """

    def __init__(self, items, per_page=10):
        if per_page < 1:
            raise ValueError("per_page must be at least 1")
        self.items = list(items)
        self.per_page = per_page

    @property
    def count(self):
        return len(self.items)

    @property
    def num_pages(self):
        if not self.items:
            return 1
        return math.ceil(self.count / self.per_page)

    def page_range(self):
        return range(1, self.num_pages + 1)

    def validate(self, number):
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError("page number must be an integer")
        if number < 1 or number > self.num_pages:
            raise PageOutOfRange(
                "page %d out of range 1..%d" % (number, self.num_pages)
            )
        return number

    def page(self, number):
        """Return the list of items on page ``number``."""
        number = self.validate(number)
        start = number * self.per_page
        end = start + self.per_page
        return self.items[start:end]

    def has_next(self, number):
        return self.validate(number) < self.num_pages

    def has_previous(self, number):
        return self.validate(number) > 1
