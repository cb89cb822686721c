"""The code location's definitions, by domain (the layout of dagster-open-platform's ``defs/``):

- :mod:`.ingest`: the ``drops`` partitions, the ``videos`` ingest, ``video_metadata``, the ``drop_sensor``;
- :mod:`.features`: one fill asset per catalog feature, what every fill shares (run config, results, group
  summaries), the ``<asset>_current`` checks with their ``staleness_sensor``, the ``features_automation`` sensor;
- :mod:`.operations`: ``dup_group``, ``drop_stats``, ``search_indices``, the snapshot and maintenance jobs,
  the maintenance schedule and the ``dead_run_reaper`` sensor.

Each domain's ``definitions`` module builds its ``dg.Definitions``; :mod:`mmfs_assets.definitions` merges
them and adds the resources and the executor. The packages import nothing themselves (the domains import
each other's modules: a fill asset depends on ``video_metadata``, which is a fill).
"""
