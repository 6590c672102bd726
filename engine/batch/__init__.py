"""Batches of prompts on this machine's GPUs (or CPU) or on a Ray cluster: ``python -m engine batch``.

  prompts   the prompts file -> jobs (ids that name assets and survive edits of the file)
  manifest  OUT/batch.json, written atomically: what is done, failed, pending
  task      one prompt on one worker: the engine as a child process, resume, result (no ray)
  local     this machine: a worker thread per GPU (or one on the CPU)
  ray_backend  a Ray cluster (the only module that imports ray)
  collect   results home: run folder under OUT/runs/<job>/, OUT/<job>.glb
  progress  the terminal bar and the batch's JSON events
  driver    the whole batch; cli: the subcommand's options
docs/CLUSTER.md describes the use; docs/ARCHITECTURE.md the events and exit codes.
"""
