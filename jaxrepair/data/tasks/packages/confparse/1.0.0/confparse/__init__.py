"""confparse 1.x: a small INI-style parser. ``parse(text)`` returns nested dicts."""

__version__ = "1.0.0"


class ParseError(ValueError):
    """A line that is neither a section, a key = value pair, a comment nor blank."""


def parse(text):
    """Parse INI-style ``text`` into {section: {key: value}} (values are stripped strings)."""
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
    return data
