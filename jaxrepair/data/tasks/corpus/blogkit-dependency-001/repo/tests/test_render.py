from blogkit.posts import Post
from blogkit.render import render_post, render_summary, tag_link
from blogkit.text import excerpt


def test_tag_link():
    assert tag_link("Machine Learning") == '<a href="/tags/machine_learning/">Machine Learning</a>'


def test_excerpt_cuts():
    text = "This is a rather long first paragraph that keeps going and going on."
    assert excerpt(text, 20) == "This is a rather ..."
    assert excerpt("Short.\n\nSecond.") == "Short."


def test_render_post():
    post = Post("A <b> title", "2024-01-01", "One.\n\nTwo & three.", ["news"])
    out = render_post(post)
    assert out.startswith("<article><h1>A &lt;b&gt; title</h1>")
    assert '<a href="/tags/news/">news</a>' in out
    assert out.endswith("<p>One.</p><p>Two &amp; three.</p></article>")


def test_render_summary():
    post = Post("My Trip", "2021-07-04", "We went to the sea.")
    out = render_summary(post)
    assert out == (
        '<li><a href="/2021/my-trip/">My Trip</a> <small>1 min</small>'
        "<p>We went to the sea.</p></li>"
    )
