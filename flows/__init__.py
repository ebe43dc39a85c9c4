"""Prefect flows of refsam (thin: they compose library functions).

Importing the package changes nothing in Prefect. An entry point that runs a flow in this
process without a Prefect server (``refsam pipeline``, the tests) first calls
:func:`flows.common.prepare_prefect`: it ties Prefect's temporary API server to the process
and gives that server time to start.
"""
