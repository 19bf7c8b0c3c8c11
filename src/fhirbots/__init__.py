"""fhirbots: an event-driven automation engine on FHIR R4 subscriptions, with sandboxed bots.

The four parts live in the checkout's top-level folders and are imported under this one name,
so that nothing collides with other distributions or with a bot author's own modules::

    fhirbots.schemas        event payloads, custom resources, the validation facade
    fhirbots.subscriptions  FHIR search semantics, criteria and topic matching
    fhirbots.bots           the sandbox, the executor, the API a bot sees, the test harness
    fhirbots.engine         the runtime: REST API, storage, event log, stages, delivery, CLI

Dependencies point one way: ``schemas`` <- ``subscriptions`` <- ``bots`` <- ``engine``.
"""
