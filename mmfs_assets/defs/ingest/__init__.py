"""Ingest: the ``drops`` partitions, the ``videos`` ingest asset, ``video_metadata`` and the ``drop_sensor``
(:mod:`.definitions` builds the domain's ``dg.Definitions``)."""
