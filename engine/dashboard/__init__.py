"""The operations dashboard, served by the engine at ``/dashboard``.

Modules::

    app                   the sub-application: sessions or keys, CSRF, error pages, static files
    context               what a handler gets: the engine's parts and the caller; page rendering
    sessions              sign-in with an API key, server-side sessions, CSRF tokens
    gate                  pages calling the FHIR API with their session (and the CSRF token)
    audit                 AuditEvents of actions taken from the dashboard
    pages                 sign-in, sign-out, project switching; every view's routes
    overview              the charts of the last hour or day, ``/api/stats``
    tail                  the live tail: one tailer per process, Server-Sent Events per client
    events                the event browser: its pages and JSON, a record's summary and links
    event_scan            what one request of the browser reads: filters, merge by time, cursors
    trace                 a trace as a tree of its steps
    subscriptions         the Subscriptions table and one Subscription's page
    subscription_actions  status, $explain, redelivery, $resend, dead letters of one Subscription
    subscription_form     the new-Subscription form, its errors placed by field
    bots                  the Bots list and one Bot: editor, sample input, runs, versions
    executions            bot executions: list, one, run again
    times                 how a moment is written on the pages and in the JSON

Templates are in ``templates/`` (Jinja2), scripts and styles in ``static/`` with the vendored
libraries in ``static/vendor/``. See ``docs/dashboard.md``.
"""
