"""How many files a process may hold open: the descriptor limit and the pool's cap.

Why apart from the pool: these are facts of the process (``RLIMIT_NOFILE``),
not of any pool, and the messages that say how to raise the limit belong with
them.  As EXtra-data does, :func:`raise_fd_limit` lifts the soft limit towards
the hard one.
"""

from __future__ import annotations

import errno
import logging
import resource

from h5pool.errors import DescriptorLimitError

logger = logging.getLogger("h5pool.pool.handle_pool")

#: The default cap never exceeds this: each open HDF5 file also costs metadata
#: cache memory, and HDF5 slows down every open in proportion to the files held.
DEFAULT_MAX_OPEN_CEILING = 128


def default_max_open(soft_limit: int | None = None) -> int:
    """Derive a handle cap from the soft ``RLIMIT_NOFILE``.

    The formula is ``clamp(soft // 4, 1, 128)``: a quarter of the descriptors for
    HDF5 files leaves three quarters to everything else a training process
    holds (shared-memory tensors in flight, sockets of a process group, logs,
    imported libraries).  At the common limit of 1024 that gives 128; at 256
    (macOS) it gives 64.

    Returns
    -------
    int
        The number of handles a pool keeps open by default.
    """
    if soft_limit is None:
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return DEFAULT_MAX_OPEN_CEILING
    return max(1, min(DEFAULT_MAX_OPEN_CEILING, soft_limit // 4))


_clamp_warned: set[tuple[int, int]] = set()


def fd_headroom(soft_limit: int) -> int:
    """Descriptors left for everything but pooled files: an eighth, at least 16."""
    return max(16, soft_limit // 8)


def clamp_to_fd_limit(max_open: int) -> int:
    """``max_open``, but at most the soft ``RLIMIT_NOFILE`` minus :func:`fd_headroom`
    (at least 1): a pool allowed every descriptor makes every other ``open()`` of
    the process fail.  Warns once per (requested, limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or max_open <= soft - fd_headroom(soft):
        return max_open
    clamped = max(1, soft - fd_headroom(soft))
    if (max_open, soft) not in _clamp_warned:
        _clamp_warned.add((max_open, soft))
        logger.warning(
            "h5pool: max_open=%d leaves no descriptors under the soft limit of %d; "
            "using %d (raise the limit with h5pool.raise_fd_limit() or `ulimit -n`)",
            max_open,
            soft,
            clamped,
        )
    return clamped


def raise_fd_limit(target: int | None = None) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards the hard limit (or ``target``); return it.

    As EXtra-data does: the soft limit is often 1024 while the hard one is far
    higher, and only the soft one stops a process.  Never lowers the limit.

    Parameters
    ----------
    target
        The soft limit wanted (``None``: the hard limit).

    Returns
    -------
    int
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if target is None else min(target, hard)
    if hard == resource.RLIM_INFINITY and target is None:
        wanted = max(soft, 1 << 20)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # e.g. above the kernel's nr_open
            logger.info("h5pool: could not raise the descriptor limit to %d", wanted)
            return soft
        logger.info("h5pool: raised the soft descriptor limit from %d to %d", soft, wanted)
        return wanted
    return soft


def is_emfile(exc: OSError) -> bool:
    return exc.errno == errno.EMFILE or "Too many open files" in str(exc)


def descriptor_limit_error(path: str, pinned: int) -> DescriptorLimitError:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        advice = (
            f"Raise the limit (h5pool.raise_fd_limit(), `ulimit -n "
            f"{min(hard, max(soft * 2, 1024))}` or resource.setrlimit) or lower max_open"
        )
    else:
        advice = (
            f"The soft limit is already the hard limit ({hard}): ask for a higher hard limit "
            f"(limits.conf, the job scheduler) or lower max_open"
        )
    return DescriptorLimitError(
        f"cannot open {path}: the process hit its file-descriptor limit "
        f"(RLIMIT_NOFILE soft={soft}, hard={hard}) and all {pinned} pooled handles are "
        f"pinned. {advice} / the number of handles held at once."
    )
