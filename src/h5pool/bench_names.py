"""The names of ``h5pool bench``'s strategies, apart from the code that runs them,
so the command line can list them without importing torch."""

STRATEGIES = (
    "open-per-sample",
    "open-all",
    "pooled-random",
    "pooled-hit",
    "pooled-block",
    "pooled-batched",
    "pooled-read-batch",
    "h5py-kept-open",
    "raw-pread",
    "raw-decode",
    "loader-pooled",
    "loader-threads",
    "loader-workers",
    "loader-memory",
)
