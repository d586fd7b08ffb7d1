"""confparse 2.x: a small INI-style parser.

Breaking change from 1.x: ``parse`` was replaced by ``loads``, which returns a ``Config``
object (use ``cfg.get(section, key, default)``) instead of nested dicts.
"""

__version__ = "2.0.0"


class ParseError(ValueError):
    """A line that is neither a section, a key = value pair, a comment nor blank."""


class Config:
    """Parsed configuration: sections of string key/value pairs."""

    def __init__(self, data):
        self._data = data

    def sections(self):
        return list(self._data)

    def section(self, name):
        return dict(self._data.get(name, {}))

    def get(self, section, key, default=None):
        return self._data.get(section, {}).get(key, default)

    def __contains__(self, section):
        return section in self._data


def loads(text):
    """Parse INI-style ``text`` into a Config."""
    data = {}
    section = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            data.setdefault(section, {})
        elif "=" in line and section is not None:
            key, _, value = line.partition("=")
            data[section][key.strip()] = value.strip()
        else:
            raise ParseError(f"line {lineno}: cannot parse {raw!r}")
    return Config(data)
