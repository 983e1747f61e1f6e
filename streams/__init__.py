"""The stream processor (Faust worker) that runs the SLA core on Kafka.

Planned by the "Stream processor on Kafka" issue: the worker consumes
``waterwatch.events``, keeps matter state in a RocksDB-backed table and fires
alerts through the co-partitioned ``waterwatch.clock`` topic.  Until it lands,
``waterwatch dev`` runs the same core over events read back from Kafka.
"""
