"""Shared plumbing for every Quantix OS command: errors, logging, running tools, the CLI handler.

Public API (everything else is private):

* :mod:`qx_common.errors` — the exception hierarchy, grouped by origin.
* :func:`qx_common.run.run` — the one way any Quantix code starts an external command.
* :func:`qx_common.fs.atomic_write` / ``atomic_copy`` — the one way any Quantix code replaces a file.
* :func:`qx_common.cli.main_wrapper` — the one top-level handler that maps errors to exit codes.
* :func:`qx_common.version.product_version` — the product version, from one place.
"""
