"""Reading, indexing, preprocessing and splitting ECG datasets."""

from ssl_ecg.data import cinc as _cinc  # noqa: F401
from ssl_ecg.data import cinc2017 as _cinc2017  # noqa: F401
from ssl_ecg.data import cpsc2018 as _cpsc2018  # noqa: F401
from ssl_ecg.data import incart as _incart  # noqa: F401
from ssl_ecg.data import ludb as _ludb  # noqa: F401  (registers the adapters)
from ssl_ecg.data import mitdb as _mitdb  # noqa: F401
from ssl_ecg.data import ptbxl as _ptbxl  # noqa: F401
from ssl_ecg.data.index import DATASETS, DatasetIndex, load_index
from ssl_ecg.data.prepare import DataSpec, Prepared, Split, patient_key, prepare
from ssl_ecg.data.preprocess import preprocess, resample
from ssl_ecg.data.record import STANDARD_LEADS, Record, read_record
from ssl_ecg.data.shard_build import build_shards
from ssl_ecg.data.shards import ShardCache, ShardWindows

__all__ = [
    "read_record", "load_index", "Record", "DatasetIndex", "DATASETS", "STANDARD_LEADS", "preprocess", "resample",
    "prepare", "DataSpec", "Split", "Prepared", "patient_key", "build_shards", "ShardCache", "ShardWindows",
]
