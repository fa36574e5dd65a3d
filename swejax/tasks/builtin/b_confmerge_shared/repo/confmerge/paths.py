"""Dotted-path access into nested config dicts."""

_MISSING = object()


def get_path(config, path, default=_MISSING):
    """Return ``config["a"]["b"]`` for ``path == "a.b"``."""
    node = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(path)
            return default
        node = node[part]
    return node


def set_path(config, path, value):
    """Set ``config["a"]["b"] = value`` for ``path == "a.b"`` in place,
    creating intermediate dicts as needed."""
    parts = path.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
