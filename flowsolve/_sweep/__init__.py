"""`flowsolve.sweep`: grid and assembly | chunks | store | several processes | controls."""

from ._store import StoreWarning as StoreWarning
from ._sweep import sweep as sweep
