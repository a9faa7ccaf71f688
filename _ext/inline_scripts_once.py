"""Write each inline ``<script>`` into the pages once, not twice.

Sphinx 7.4 duplicates inline scripts that an extension adds after the HTML builder exists:
``app.add_js_file(None, body=...)`` stores the script in the registry and in the builder with the
file name ``None``, and ``StandaloneHTMLBuilder.prepare_writing`` adds the registry's scripts again
with the file name ``""``. The builder skips scripts it already has, but ``None != ""``, so the
script goes in a second time. sphinx-thebe (its ``const THEBE_JS_URL = ...`` configuration, added at
``env-before-read-docs``) and sphinx-togglebutton (at ``builder-inited``) both add scripts this way,
and the second ``const`` made every page throw "Identifier 'THEBE_JS_URL' has already been declared".

Sphinx fixed this in sphinx-doc/sphinx#13402 (Sphinx 8) by passing ``""`` to the builder; jupyter-book
1.x needs Sphinx 7, so this extension does the same: it runs first at ``builder-inited``, before any
extension can add a script to the builder, and makes the builder store an inline script under ``""``.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx
from sphinx.builders.html import StandaloneHTMLBuilder


def _store_inline_scripts_under_empty_name(app: Sphinx) -> None:
    builder = app.builder
    if not isinstance(builder, StandaloneHTMLBuilder):
        return
    add_js_file = builder.add_js_file

    def add_js_file_once(filename: str | None, **kwargs: Any) -> None:
        add_js_file(filename or "", **kwargs)

    builder.add_js_file = add_js_file_once  # type: ignore[method-assign]


def setup(app: Sphinx) -> dict[str, Any]:
    # Priority 0: before the builder-inited handlers (default 500) that add inline scripts.
    app.connect("builder-inited", _store_inline_scripts_under_empty_name, priority=0)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
