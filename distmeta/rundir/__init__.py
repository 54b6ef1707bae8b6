"""The Ray-free plumbing of a run directory: where its files are (:mod:`~distmeta.rundir.layout`),
the storage they live on (:mod:`~distmeta.rundir.storage`), checkpoints, starting or resuming a
run, and the parameters a run starts from (:mod:`~distmeta.rundir.model_init`)."""
