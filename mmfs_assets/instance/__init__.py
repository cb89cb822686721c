"""The Dagster instance MMFS runs against: initialised once under a lock, freed of dead runs' pool slots."""
