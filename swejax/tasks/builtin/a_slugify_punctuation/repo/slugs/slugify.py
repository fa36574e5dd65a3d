"""URL slugs from arbitrary titles."""
import re
import unicodedata

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def slugify(text, separator="-", max_length=None):
    """Turn ``text`` into a lowercase ASCII slug.

    Runs of characters other than letters and digits become a single
    ``separator``; the slug never starts or ends with the separator.
    """
    text = unicodedata.normalize("NFKD", text)
    text = text.encode("ascii", "ignore").decode("ascii")
    text = text.strip().lower()
    slug = _NON_ALNUM.sub(separator, text)
    if max_length is not None:
        slug = slug[:max_length].rstrip(separator)
    return slug


def unique_slug(text, existing, separator="-"):
    """Return a slug for ``text`` that is not in ``existing``."""
    base = slugify(text, separator)
    slug = base
    n = 2
    while slug in existing:
        slug = "%s%s%d" % (base, separator, n)
        n += 1
    return slug
