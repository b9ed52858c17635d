"""How another paper's package joins the shared framework without this package naming it.

The framework keeps registries that such a package fills when its registering module is
imported: claims and their judges (:mod:`ums_rep.claims`), report sections and the kinds of run
folder the report reads (:func:`ums_rep.reporting.register_section`,
:func:`ums_rep.reporting.register_kind`), presets (:func:`ums_rep.presets.register`), the run
folders ``predict`` reads (:func:`ums_rep.inference.register_run_kind`), the model kinds
``load_model`` checks (:func:`ums_rep.runs.register_model_kind`) and the stages of
``reproduce.sh``'s steps (:func:`ums_rep.reproduce_plan.register_stage`). The package names that module
under the entry-point group :data:`PLUGIN_GROUP` in its ``[options.entry_points]``::

    ums_rep.plugins =
        my_paper = my_paper.plugin

and :func:`load` imports every module so named; the report, the claims' judge, the
predictor and ``reproduce.sh``'s plan call it before they consult a registry.
"""
from __future__ import annotations

PLUGIN_GROUP = "ums_rep.plugins"  # the entry-point group of the modules that fill the registries


def load() -> list[str]:
    """Import every module registered under the entry-point group :data:`PLUGIN_GROUP` (an
    installed package's ``[options.entry_points]``), so that each fills the registries; a module
    imported before is not imported again.

    Returns:
        The entry points' names."""
    from importlib.metadata import entry_points
    names = []
    for ep in entry_points(group=PLUGIN_GROUP):
        ep.load()
        names.append(ep.name)
    return names
