"""Tiny CIFAR-10 and SVHN stand-ins in the true on-disk formats (for tests; nothing is fetched).

The writers live in :mod:`leaklib.data` (the paper-shaped dry run uses them too); the names here
are the ones the tests have always used.
"""

from __future__ import annotations

from leaklib.data import CIFAR10_LABEL_NAMES, write_cifar10_standin, write_svhn_standin

write_cifar10 = write_cifar10_standin
write_svhn = write_svhn_standin

__all__ = ["CIFAR10_LABEL_NAMES", "write_cifar10", "write_svhn"]
