"""Training: the LightningModule (`module`), the lockstep engine and its per-member optimizers (`lockstep`, `optim`),
the callbacks that watch a run (`monitor`), and the step-0 diagnostics (`diagnostics`)."""
