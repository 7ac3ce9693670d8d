"""Lightning glue: the LightningModule around MADE, and building or loading one from a config or a run dir."""
