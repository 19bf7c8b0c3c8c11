"""The operations dashboard, served by the engine at ``/dashboard``.

Modules::

    app            the sub-application: sessions or keys, CSRF, error pages, static files
    context        what a handler gets: the engine's parts and the caller; page rendering
    sessions       sign-in with an API key, server-side sessions, CSRF tokens
    gate           pages calling the FHIR API with their session (and the CSRF token)
    audit          AuditEvents of actions taken from the dashboard
    pages          sign-in, sign-out, project switching; every view's routes
    overview       the charts of the last hour or day, ``/api/stats``
    tail           the live tail: one tailer per process, Server-Sent Events per client
    events         the event browser over the topics and their dead-letter twins
    trace          a trace as a tree of its steps
    subscriptions  the Subscriptions table, one Subscription and its actions, the new form
    bots           the Bots list and one Bot: editor, sample input, runs, versions
    executions     bot executions: list, one, run again

Templates are in ``templates/`` (Jinja2), scripts and styles in ``static/`` with the vendored
libraries in ``static/vendor/``. See ``docs/dashboard.md``.
"""
