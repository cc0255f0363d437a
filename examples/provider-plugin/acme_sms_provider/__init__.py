"""Acme SMS for messaging-stats-exporter: a provider that lives in its own package.

``acme_sms_provider.provider`` is the provider (registered in the entry-point group
``messaging_stats_exporter.providers``), ``acme_sms_provider.simulator`` its simulated API
(``messaging_stats_exporter.simulators``), for ``--demo`` and the tests.
"""
