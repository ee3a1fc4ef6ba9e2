"""Fail on broken internal links in a built HTML site: ``python .ci/check_links.py _build/html``.

Sphinx's ``--nitpick`` checks cross-references, but not raw links written in Markdown or
notebook cells, nor the ``#anchors`` they point at. This walks every page, resolves each relative
``href``/``src`` against the built files, and lists every target that is missing: a file, or an
``id`` in the target page. External links (``http:``, ``mailto:``, ...) are left alone. Stdlib
only, so it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Fragments that look like element ids; others ("#!/route", ":~:text=") are scripts' business.
SIMPLE_FRAGMENT = re.compile(r"^[^\s/=!?&]+$")
# Themes copy their Jinja templates here verbatim ({{ pathto(...) }}): files, not pages.
NOT_PAGES = ("_static",)


class _Page(HTMLParser):
    """The ids a page defines and the relative links it makes, in one pass."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in ("href", "src") and _is_internal(value):
                self.links.append(value.strip())


def _is_internal(url: str) -> bool:
    """Relative links only: no scheme (http, mailto, data, javascript), no ``//host``."""
    parts = urlsplit(url.strip())
    return bool(url.strip()) and not parts.scheme and not parts.netloc


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    page.close()
    return page


def _target(page: Path, path: str, root: Path) -> Path | None:
    """The file a link's path names (a folder means its index.html), or None if it is missing."""
    if not path:
        return page
    target = (root / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    target = target.resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file() or not target.is_relative_to(root):
        return None
    return target


def broken_links(root: str | Path) -> list[str]:
    """``"page: link (why)"`` for every internal link of the site under ``root`` that is broken.

    Raises:
        FileNotFoundError: ``root`` holds no HTML page (a build that produced nothing passes
            nothing).
    """
    root = Path(root).resolve()
    pages = {
        path: _parse(path)
        for path in sorted(root.rglob("*.html"))
        if path.relative_to(root).parts[0] not in NOT_PAGES
    }
    if not pages:
        raise FileNotFoundError(f"no .html file under {root}: build the book first")
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            target = _target(page, unquote(parts.path), root)
            fragment = unquote(parts.fragment)
            if target is None:
                why = "no such file"
            elif fragment and SIMPLE_FRAGMENT.match(fragment) and target in pages:
                why = None if fragment in pages[target].ids else f"no id {fragment!r} there"
            else:
                why = None
            if why:
                broken.append(f"{page.relative_to(root)}: {link} ({why})")
    return broken


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "_build/html")
    try:
        broken = broken_links(root)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in broken:
        print(line)
    if broken:
        print(f"{len(broken)} broken internal link(s) under {root}", file=sys.stderr)
        return 1
    print(f"every internal link under {root} resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
