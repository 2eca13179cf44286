"""Former home of the CPSC 2018, INCART and CinC 2017 adapters; kept so that old imports keep working.

Each dataset now has its own module (:mod:`ssl_ecg.data.cpsc2018`,
:mod:`ssl_ecg.data.incart`, :mod:`ssl_ecg.data.cinc2017`) and the tolerant WFDB
reader lives in :mod:`ssl_ecg.data.record`.
"""

from ssl_ecg.data.cinc2017 import CINC2017_CLASSES, load_cinc2017
from ssl_ecg.data.cpsc2018 import CPSC2018_CLASSES, CPSC2018_FS, load_cpsc2018, read_cpsc2018
from ssl_ecg.data.incart import load_incart
from ssl_ecg.data.record import read_tolerant

__all__ = ["CPSC2018_CLASSES", "CPSC2018_FS", "read_cpsc2018", "load_cpsc2018", "read_tolerant", "load_incart",
           "CINC2017_CLASSES", "load_cinc2017"]
