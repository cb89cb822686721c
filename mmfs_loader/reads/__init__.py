"""What a dataset reads, and in which order.

``columns`` (table columns from the names asked for), ``selection`` (SQL filter -> sorted row ids, and the
provenance guard), ``ordering`` (an epoch's order over ranks and workers: pure functions of integers),
``node`` / ``node_selection`` / ``cache`` (files shared by every process of a node), ``fetch`` and
``block_reads`` (reading blocks of rows and clips), ``convert`` (Arrow -> tensors, ``collate``).
Depends on :mod:`mmfs_loader.contract` and :mod:`mmfs_loader.decode`.
"""
