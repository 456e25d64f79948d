"""A griffe extension for the API reference (``extensions:`` of mkdocstrings' python handler).

The project's docstrings follow the Google style with two habits the Google-style parser does
not know; this extension rewrites the docstring text when griffe loads an object, before it is
parsed (the code is not changed):

- a paragraph that ends with reStructuredText's literal-block marker ``::`` ends with ``:``
  (the indented block after it is a code block in Markdown too);
- reStructuredText cross-reference roles (``:class:`~pkg.Name```, ``:func:``, ``:mod:``, ...)
  become plain code spans (``pkg.Name``); Markdown would show the role's name in front of them;
- an ``Args:`` entry that documents several parameters on one line
  (``temperature, k1, k2: TCL's hyper-parameters``) becomes one entry per parameter, each with
  the shared description; the parser would read it as one unknown parameter and warn.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`~?([^`]+)`")
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_LITERAL = re.compile(r"(?<=\S)::$", re.MULTILINE)
_MULTI = re.compile(r"^(\s+)([\w*]+(?:\s*,\s*[\w*]+)+):(.*)$")


def rewrite(text: str) -> str:
    """The docstring ``text`` with roles made code spans and multi-name arguments split."""
    text = _ROLE.sub(r"`\1`", text)
    text = _LITERAL.sub(":", text)
    lines = text.splitlines()
    out: list[str] = []
    in_args = False
    section_indent = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _SECTION.match(line)
        if header:
            in_args, section_indent = True, header.group(1)
            out.append(line)
            i += 1
            continue
        if in_args and line.strip() and not line.startswith(section_indent + " "):
            in_args = False  # a line at the section's indentation or less ends the section
        entry = _MULTI.match(line) if in_args else None
        if entry is None:
            out.append(line)
            i += 1
            continue
        indent, names, first = entry.groups()
        block = [first]
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            block.append(lines[i])  # the entry's continuation lines
            i += 1
        for name in (n.strip() for n in names.split(",")):
            out.append(f"{indent}{name}:{block[0]}")
            out.extend(block[1:])
    return "\n".join(out)


class RestRolesAndSharedArgs(griffe.Extension):
    """Rewrite each object's docstring with :func:`rewrite` when griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
