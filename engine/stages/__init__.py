"""Stage runners, in flow order: each reads one topic and writes the next.

::

    relay       outbox (datastore)        -> fhir.changes.v1
    matcher     fhir.changes.v1           -> fhir.notifications.v1
    dispatcher  fhir.notifications.v1     -> rest-hook, websocket, message topic, Bot/<id>

A ``Bot/<id>`` notification is handed to :mod:`fhirbots.engine.automation`, which runs the bot
in the sandbox (:mod:`fhirbots.bots`); its writes go back through the FHIR service and so
become change events again.
"""
