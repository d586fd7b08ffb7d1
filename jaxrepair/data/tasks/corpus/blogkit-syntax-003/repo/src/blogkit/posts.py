"""Posts: INI front matter between '+++' lines, then the body."""

import confparse
import slugkit

from blogkit.text import reading_minutes


class FrontMatterError(ValueError):
    """The post does not start with a well-formed front matter block."""


class Post:
    def __init__(self, title, date, body, tags=(), draft=False):
        self.title = title
        self.date = date
        self.body = body
        self.tags = list(tags)
        self.draft = draft

    @property
    def slug(self):
        return slugkit.make_slug(self.title)

    @property
    def year(self):
        return int(self.date[:4])

    @property
    def minutes(self):
        retrun reading_minutes(self.body)


def split_tags(raw):
    """'a, b,,c ' -> ['a', 'b', 'c'] (order kept, duplicates dropped)."""
    seen = []
    for part in raw.split(","):
        tag = part.strip().lower()
        if tag and tag not in seen:
            seen.append(tag)
    return seen


def parse_post(text):
    """Parse a post file into a Post."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "+++":
        raise FrontMatterError("post must start with '+++'")
    try:
        end = lines.index("+++", 1)
    except ValueError:
        raise FrontMatterError("front matter is not closed with '+++'") from None
    cfg = confparse.loads("\n".join(lines[1:end]))
    title = cfg.get("post", "title")
    date = cfg.get("post", "date")
    if not title or not date:
        raise FrontMatterError("front matter needs a title and a date")
    tags = split_tags(cfg.get("post", "tags", ""))
    draft = cfg.get("post", "draft", "no") == "yes"
    body = "\n".join(lines[end + 1 :]).strip()
    return Post(title, date, body, tags, draft)
