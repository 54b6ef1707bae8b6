"""The distributed runtime on Ray: the run (:mod:`~distmeta.runtime.run`), its actors (parameter
server, workers, node aggregators), the pipelined step loop and its fault policy, sweeps on
Ray Tune. The only room that imports Ray; Ray is imported on first use, after
:func:`~distmeta.runtime.cluster.connect` has chosen how it binds."""
