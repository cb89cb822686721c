"""Operations: assets derived from the filled table (``dup_group``, ``drop_stats``, ``search_indices``), the
snapshot and maintenance jobs and schedule, the ``dead_run_reaper`` sensor (:mod:`.definitions` builds the
domain's ``dg.Definitions``)."""
