"""Entry point of the workbench (`mlm-tui` with no subcommand).

Importing this module must stay cheap (no torch, no transformers): the first screen is painted before any
model is loaded, and the heavy libraries are imported by worker threads.
"""

from __future__ import annotations

import gc


def run_app(model: str | None = None, data: str | None = None, text_field: str = "text") -> None:
    # Python's collector stays off until the first frame is on screen (`WorkbenchApp._after_first_frame`
    # turns it on): a start-up creates objects by the hundred thousand, and the full collection they set
    # off came in the middle of the first paint (15 to 20 ms), with smaller ones through the imports.
    gc.disable()
    from mlm_tui.app.workbench import WorkbenchApp

    WorkbenchApp(model=model or "starter", data=data, text_field=text_field).run()
