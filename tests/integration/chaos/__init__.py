"""The distributed chaos harness: every part of the distributed mode (two API processes, two
workers of each role, PostgreSQL, a Kafka broker, a rest-hook receiver) as processes on network
namespaces of their own, a steady load of FHIR writes, faults injected in turn, and the checks
that nothing acknowledged was lost.

Modules: :mod:`.netns` (namespaces, veth pairs, a bridge, cutting a link), :mod:`.processes`
(PostgreSQL, the broker, ``fhirbots`` processes), :mod:`.receiver` (the rest-hook endpoint),
:mod:`.load` (the writes), :mod:`.checks` (what must hold afterwards, and the figures),
:mod:`.scenario` (the whole run, shared by ``tests/integration/test_chaos.py`` and
``bench/chaos.py``). It needs root (``ip netns``) and Linux.
"""
