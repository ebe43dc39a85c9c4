"""Prefect flows of refsam (thin: they compose library functions).

Importing the package ties Prefect's temporary API server (used when no
``PREFECT_API_URL`` is set) to this process, so a killed run leaves no orphan server
(:func:`flows.common.tie_temporary_server_to_process`), and gives that server time to
start on a busy machine (:func:`flows.common.allow_slow_server_start`).
"""

from flows.common import allow_slow_server_start, tie_temporary_server_to_process

allow_slow_server_start()
tie_temporary_server_to_process()
