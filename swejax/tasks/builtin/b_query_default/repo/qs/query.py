"""Parse and build URL query strings."""
from urllib.parse import quote_plus, unquote_plus


def parse_query(query, params={}):
    """Parse ``query`` into a dict mapping names to lists of values.

    A leading ``?`` is ignored, ``+`` decodes to a space and a name without
    ``=`` gets an empty value. Pass an existing ``params`` dict to
    accumulate several query strings into one mapping; otherwise a new
    dict is returned.
    """
    if query.startswith("?"):
        query = query[1:]
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        params.setdefault(unquote_plus(name), []).append(unquote_plus(value))
    return params


def get_first(params, name, default=None):
    """Return the first value for ``name``, or ``default``."""
    values = params.get(name)
    return values[0] if values else default


def build_query(params):
    """Inverse of :func:`parse_query`; keys are emitted in sorted order."""
    parts = []
    for name in sorted(params):
        values = params[name]
        if isinstance(values, str):
            values = [values]
        for value in values:
            parts.append("%s=%s" % (quote_plus(name), quote_plus(str(value))))
    return "&".join(parts)
