"""What the operations dashboard reads: windowed statistics and the records of activity.

The statistics stage (:mod:`fhirbots.engine.stages.stats`) consumes the change,
notification, delivery and bot-execution topics, folds them into tumbling windows
(:mod:`fhirbots.engine.observatory.windows`) and writes closed windows, consumer-lag samples,
execution records and the activity index of each trace to an :class:`ObservatoryStore`. The
dashboard and its JSON API only read that store (and, for the event browser, the event log):
no chart scans a raw topic.

Modules::

    model     the values the store takes and returns
    store     the ObservatoryStore port
    windows   pure windowed aggregation (counts, duration histograms, quantiles)
"""
