"""Listing pages: published posts, tag index, archive and pagination."""


def published(posts):
    """Non-draft posts, newest first (ties broken by title)."""
    visible = [p for p in posts if not p.draft]
    return sorted(visible, key=lambda p: (p.date, p.title), reverse=True)


def tag_index(posts):
    """{tag: [slug, ...]} over published posts, slugs newest first."""
    index = {}
    for post in published(posts):
        for tag in post.tags:
            index.setdefault(tag, []).append(post.slug)
    return index


def archive(posts):
    """{year: number of published posts}, years in ascending order."""
    counts = {}
    for post in published(posts):
        counts[post.year] = counts.get(post.year, 0) + 1
    return dict(sorted(counts.items()))


def paginate(items, per_page):
    """Split ``items`` into pages of ``per_page``; always at least one (maybe empty) page."""
    if per_page < 1:
        raise ValueError("per_page must be at least 1")
    pages = [items[i : i + per_page] for i in range(0, len(items), per_page)]
    return pages or [[]]
