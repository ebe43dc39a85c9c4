"""Prefect flows of refsam (thin: they compose library functions).

Importing the package ties Prefect's temporary API server (used when no
``PREFECT_API_URL`` is set) to this process, so a killed run leaves no orphan server
(:func:`flows.common.tie_temporary_server_to_process`).
"""

from flows.common import tie_temporary_server_to_process

tie_temporary_server_to_process()
