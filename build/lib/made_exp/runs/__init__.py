"""What a run is: its config schema and validation, its directory layout, its records, sweeps."""
