"""FHIR subscriptions: search semantics and the subscription matcher.

* :mod:`fhirbots.subscriptions.search` - FHIR search semantics shared by the datastore and the
matcher;
* :mod:`fhirbots.subscriptions.definitions` - Subscription / SubscriptionTopic resources parsed (and
  validated) into :mod:`fhirbots.subscriptions.model` objects;
* :mod:`fhirbots.subscriptions.evaluation`, :mod:`fhirbots.subscriptions.index`,
:mod:`fhirbots.subscriptions.matching` -
  does a subscription fire for a change event, which ones can, and the notifications;
* :mod:`fhirbots.subscriptions.explain`, :mod:`fhirbots.subscriptions.loop_guard`,
:mod:`fhirbots.subscriptions.config`.

Everything here is pure: no I/O. The stage runner is :mod:`fhirbots.engine.stages.matcher`.
"""
