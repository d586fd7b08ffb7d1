"""HTML rendering."""

import html

import slugkit

from blogkit.text import excerpt


def tag_link(tag):
    anchor = slugkit.make_slug(tag, separator="_")
    return f'<a href="/tags/{anchor}/">{html.escape(tag)}</a>'


def render_summary(post):
    """One list item for an index page."""
    title = html.escape(post.title)
    return (
        f'<li><a href="/{post.year}/{post.slug}/">{title}</a> '
        f"<small>{post.minutes} min</small><p>{html.escape(excerpt(post.body))}</p></li>"
    )


def render_post(post):
    tags = " ".join(tag_link(t) for t in post.tags)
    paragraphs = [p.strip() for p in post.body.split("\n\n") if p.strip()]
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return f"<article><h1>{html.escape(post.title)}</h1><nav>{tags}</nav>{body}</article>"
