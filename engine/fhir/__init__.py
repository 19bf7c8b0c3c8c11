"""FHIR REST semantics, independent of HTTP: used by the API's handlers and by the bots' gateway.

Modules::

    service         FhirService: create, read, update, patch, delete, history; validation
    bundles         transaction and batch Bundles
    search          SearchService: parse, compile to SQL, run, include; result shaping
    searchset       the ``searchset`` Bundle of a search result
    outcome         OperationOutcome: the one shape every error takes
    validator_pool  validation of many resources at once, in worker processes
"""
