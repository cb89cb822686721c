"""Features: one fill asset per catalog feature, what every fill shares, the ``<asset>_current`` checks and
the sensors that evaluate them and automate the fills (:mod:`.definitions` builds the domain's
``dg.Definitions`` for a feature list)."""
