"""The ``fhirbots`` command line (entry point :func:`fhirbots.engine.cli.main.main`).

Modules::

    main           the parser; server commands (``serve``, ``worker``) and ``load``
    bots           ``bot deploy|run``
    delivery       ``deadletter list|retry|discard``, ``resend``
    subscriptions  ``subscription explain|apply``, ``match``
    client         the small FHIR client of the client commands
    loader         bulk loading of Bundles for ``load``
    remote         a bot gateway over a server's REST API, for ``bot run --url``
"""
