"""Simulators for demos and load: CDR traffic (:mod:`.traffic`) and a payment processor
answering recharge requests (:mod:`.payments`). They talk to Kafka like any other client of
the wire contract (SPEC §2); ``rater simulate`` (:mod:`rater.simulate`) runs them."""
