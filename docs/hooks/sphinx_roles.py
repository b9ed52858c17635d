"""A griffe extension for the API reference: the package's docstrings cross-reference with Sphinx
roles (``:func:`fit```, ``:class:`~ums_rep.weighting.Weighting```), which Markdown would show
as literal text. Each role becomes an optional mkdocs-autorefs link: to the object's page where
the reference renders it, plain code where it does not (an object the reference leaves out).
Loaded by mkdocs.yml (mkdocstrings' ``extensions`` option); changes nothing in the package."""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|exc|obj|const):`(~?)([\w.]+?)(\(\))?`")
PACKAGES = ("ums_rep", "mt_unet", "data_prep", "benchmarks")


def _identifier(obj: griffe.Object, name: str) -> str:
    """``name`` as a full path: as written when it starts with a package, else resolved in the
    object's own scope, its class or its module (the first that has its first component)."""
    if name.split(".")[0] in PACKAGES:
        return name
    head = name.split(".")[0]
    scopes = [obj if obj.is_class or obj.is_module else None, obj.parent, obj.module]
    for scope in scopes:
        if scope is not None and head in scope.members:
            return f"{scope.path}.{name}"
    return f"{obj.module.path}.{name}"


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        def link(m: re.Match) -> str:
            short, name = m.group(1), m.group(2)
            shown = name.rsplit(".", 1)[-1] if short else name
            return (f'<autoref optional identifier="{_identifier(obj, name)}">'
                    f"<code>{shown}{m.group(3) or ''}</code></autoref>")
        obj.docstring.value = ROLE.sub(link, obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite(member)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of a loaded package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        _rewrite(pkg)
