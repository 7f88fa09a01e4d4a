"""Entry point of the workbench (`mlm-tui` with no subcommand).

Importing this module must stay cheap (no torch, no transformers): the first screen is painted before any
model is loaded, and the heavy libraries are imported by worker threads.
"""

from __future__ import annotations

from mlm_tui.app.workbench import WorkbenchApp


def run_app(model: str | None = None, data: str | None = None, text_field: str = "text") -> None:
    WorkbenchApp(model=model or "starter", data=data, text_field=text_field).run()
