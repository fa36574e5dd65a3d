"""Merge configuration layers."""


def deep_merge(base, override):
    """Return a new dict with ``override`` merged on top of ``base``.

    Nested dictionaries are merged recursively; any other value from
    ``override`` (lists included) replaces the one from ``base``.
    Neither input is modified, and the result shares no mutable state
    with them.
    """
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def load(defaults, *layers):
    """Merge ``layers`` on top of ``defaults``, later layers winning."""
    config = {}
    for layer in (defaults,) + layers:
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise TypeError("config layers must be dicts, got %r" % type(layer))
        config = deep_merge(config, layer)
    return config
