"""MkDocs hooks of the documentation site (``hooks:`` in ``mkdocs.yml``).

- The raw ``results.md`` files that ``tcl-ssl compare`` and ``tcl-ssl sweep`` wrote under
  ``docs/results/cpu-small/`` are rendered as they are, with a note on top that says what they
  are, without the page's table of contents, and with their wide tables kept on one line per row.
- Markers in the Markdown are replaced by tables generated from the code at build time, so that
  adding a method or a recipe updates the site with no hand edit:

  - ``<!-- methods-table -->``: :func:`tcl_ssl.methods.registry.describe_methods` (the table
    ``tcl-ssl pretrain --list-methods`` prints);
  - ``<!-- recipes-table -->``: every packaged recipe and its description
    (:func:`tcl_ssl.config.recipes.describe_recipes`, the list ``tcl-ssl pretrain --list-recipes``
    prints);
  - ``<!-- options-table -->``: every run option, its group, flag, default and help, from its
    declaration (:func:`tcl_ssl.cli.options.describe_options`).

The code is imported from the repository this ``mkdocs.yml`` belongs to (put first on
``sys.path``), not from whichever copy of the project happens to be installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

METHODS_MARKER = "<!-- methods-table -->"
RECIPES_MARKER = "<!-- recipes-table -->"
OPTIONS_MARKER = "<!-- options-table -->"


def _import_from_repository() -> None:
    root = str(ROOT)
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)


def methods_table() -> str:
    _import_from_repository()
    from tcl_ssl.methods.registry import describe_methods

    return describe_methods()


def recipes_table() -> str:
    _import_from_repository()
    from tcl_ssl.config.recipes import describe_recipes

    rows = ["| recipe | what it sets |", "|---|---|"]
    for line in describe_recipes().splitlines():
        name, _, description = line.partition(": ")
        description = description.replace("|", "\\|")
        rows.append(f"| `{name}` | {description} |")
    return "\n".join(rows)


def options_table() -> str:
    _import_from_repository()
    from tcl_ssl.cli.options import describe_options

    return describe_options()


RAW_RESULTS = "results/cpu-small/"
RAW_NOTE = (
    '!!! note "Raw results file"\n'
    "    This page is a `results.md` exactly as `tcl-ssl compare` or `tcl-ssl sweep` wrote it "
    "(the command shows the output path on the machine that ran it). What it shows, and the plots, "
    "are on the experiment's page: see [Results]({index}).\n\n"
)


def _is_raw_results(page) -> bool:
    uri = page.file.src_uri
    return uri.startswith(RAW_RESULTS) and uri.endswith("/results.md")


def _replace_marker(markdown: str, marker: str, table: str) -> str:
    """``markdown`` with the line holding ``marker`` replaced by ``table``, every line indented as
    the marker is (so that a table inside an admonition stays inside it)."""
    lines = []
    for line in markdown.split("\n"):
        if line.strip() == marker:
            indent = line[: len(line) - len(line.lstrip())]
            lines += [indent + row for row in table.split("\n")]
        else:
            lines.append(line)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if _is_raw_results(page):
        page.meta.setdefault("hide", ["toc"])
        index = "../" * page.file.src_uri.count("/") + "results/index.md"
        title, _, rest = markdown.partition("\n")
        markdown = f"{title}\n\n{RAW_NOTE.format(index=index)}{rest}"
    for marker, table in (
        (METHODS_MARKER, methods_table),
        (RECIPES_MARKER, recipes_table),
        (OPTIONS_MARKER, options_table),
    ):
        if marker in markdown:
            markdown = _replace_marker(markdown, marker, table())
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    if _is_raw_results(page):
        html = f'<div class="raw-results">{html}</div>'
    return html
