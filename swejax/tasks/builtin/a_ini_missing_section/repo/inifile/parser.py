"""A tiny INI-style configuration reader."""

_MISSING = object()


class ConfigError(Exception):
    """Raised for malformed input and for missing sections or keys."""


class Config:
    def __init__(self, sections):
        self._sections = sections

    def sections(self):
        return list(self._sections)

    def get(self, section, key, default=_MISSING):
        """Return the value of ``key`` in ``section``.

        If the section or the key does not exist, return ``default`` when
        given, otherwise raise ConfigError.
        """
        values = self._sections[section]
        if key in values:
            return values[key]
        if default is not _MISSING:
            return default
        raise ConfigError("missing key %r in section [%s]" % (key, section))

    def getint(self, section, key, default=_MISSING):
        value = self.get(section, key, default)
        if value is default:
            return value
        try:
            return int(value)
        except ValueError:
            raise ConfigError("[%s] %s: not an integer: %r" % (section, key, value))

    def getbool(self, section, key, default=_MISSING):
        value = self.get(section, key, default)
        if value is default:
            return value
        lowered = value.lower()
        if lowered in ("1", "yes", "true", "on"):
            return True
        if lowered in ("0", "no", "false", "off"):
            return False
        raise ConfigError("[%s] %s: not a boolean: %r" % (section, key, value))


def parse(text):
    """Parse INI text into a Config."""
    sections = {}
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        if "=" not in line:
            raise ConfigError("line %d: expected 'key = value'" % lineno)
        if current is None:
            raise ConfigError("line %d: key outside of any section" % lineno)
        key, value = line.split("=", 1)
        current[key.strip()] = value.strip()
    return Config(sections)
