"""Reading and writing datasets in the LeRobot v3.0 layout, without depending on lerobot.

Layout (LeRobot ``codebase_version`` v3.0)::

    meta/info.json                              fps, features, totals, path templates
    meta/stats.json                             per-feature min/max/mean/std/count (+ quantiles)
    meta/tasks.parquet                          task string (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet    one row per episode: length, file, global row range, stats
    data/chunk-000/file-000.parquet             one row per frame; images as PNG in struct<bytes, path>

Crash safety: after every episode the writer rewrites the current data file and the metadata, each through a
temporary file and an atomic rename, and writes ``meta/info.json`` last. ``info.json`` is the commit point:
a reader trusts only its ``total_episodes``/``total_frames``, so a crash at any moment leaves a dataset that
reads back with every completed episode. Data files roll over at ``data_files_size_in_mb`` (32 MB here, not
LeRobot's 100, to bound the per-episode rewrite); an episode never spans two files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlvla.io import atomic_write_bytes, atomic_write_json

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


class DatasetError(ValueError):
    """A dataset file that is missing, corrupt or inconsistent; the message names the file."""


# ---------------------------------------------------------------------------------------------- helpers
def atomic_write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _arrow_type(feat: dict) -> pa.DataType:
    dtype, shape = feat["dtype"], list(feat["shape"])
    if dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if dtype == "string":
        return pa.string()
    base = pa.from_numpy_dtype(np.dtype(dtype))
    if shape == [1]:
        return base
    t = base
    for d in reversed(shape):
        t = pa.list_(t, d)
    return t


def _hf_feature(feat: dict) -> dict:
    """The Hugging Face `datasets` feature description LeRobot embeds in each parquet file."""
    dtype, shape = feat["dtype"], list(feat["shape"])
    hf_dtype = {"float32": "float32", "float64": "float64", "int64": "int64", "bool": "bool"}.get(dtype, dtype)
    if dtype == "image":
        return {"_type": "Image"}
    if dtype == "string":
        return {"dtype": "string", "_type": "Value"}
    if shape == [1]:
        return {"dtype": hf_dtype, "_type": "Value"}
    if len(shape) == 1:
        return {"feature": {"dtype": hf_dtype, "_type": "Value"}, "length": shape[0], "_type": "List"}
    return {"shape": shape, "dtype": hf_dtype, "_type": f"Array{len(shape)}D"}


def _column(values: np.ndarray, feat: dict) -> pa.Array:
    typ = _arrow_type(feat)
    if feat["dtype"] == "image":
        return pa.array(
            [{"bytes": encode_png(v), "path": f"frame-{i:06d}.png"} for i, v in enumerate(values)],
            type=typ,
        )
    arr = np.asarray(values, dtype=np.dtype(feat["dtype"]))
    shape = list(feat["shape"])
    if shape == [1]:
        return pa.array(arr.reshape(-1), type=typ)
    flat = pa.array(arr.reshape(-1), type=pa.from_numpy_dtype(arr.dtype))
    out = flat
    for d in reversed(shape):
        out = pa.FixedSizeListArray.from_arrays(out, d)
    return out


def _feature_stats(values: np.ndarray, feat: dict) -> dict[str, np.ndarray]:
    """Per-episode stats in LeRobot's shapes: images per channel in [0, 1] with shape (3, 1, 1)."""
    if feat["dtype"] == "image":
        x = np.asarray(values, dtype=np.float64) / 255.0  # (T, H, W, 3)
        axes = (0, 1, 2)
        st = {
            "min": x.min(axis=axes), "max": x.max(axis=axes), "mean": x.mean(axis=axes), "std": x.std(axis=axes),
        }  # fmt: skip
        st = {k: v.reshape(3, 1, 1) for k, v in st.items()}
        st["count"] = np.array([len(x)])
        return st
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    st = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q in QUANTILES:
        st[f"q{int(round(q * 100)):02d}"] = np.quantile(x, q, axis=0)
    return st


def aggregate_stats(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode stats: count-weighted means, pooled variances, elementwise min/max."""
    out: dict[str, dict[str, np.ndarray]] = {}
    if not per_episode:
        return out
    for key in per_episode[0]:
        eps = [e[key] for e in per_episode]
        n = np.array([float(e["count"][0]) for e in eps])
        w = n / n.sum()
        mean = sum(wi * e["mean"] for wi, e in zip(w, eps))
        var = sum(wi * (e["std"] ** 2 + (e["mean"] - mean) ** 2) for wi, e in zip(w, eps))
        agg = {
            "min": np.min([e["min"] for e in eps], axis=0),
            "max": np.max([e["max"] for e in eps], axis=0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([int(n.sum())]),
        }
        for q in [k for k in eps[0] if k.startswith("q")]:
            agg[q] = sum(wi * e[q] for wi, e in zip(w, eps))
        out[key] = agg
    return out


def _to_jsonable(stats):
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


# ---------------------------------------------------------------------------------------------- writer
class LeRobotWriter:
    """Writes episodes one at a time; every completed episode is on disk before ``add_episode`` returns.

    ``features`` maps a feature name to ``{"dtype", "shape", "names"}`` (LeRobot's description) for every
    non-default column. Opening an existing dataset continues it (same features required).
    """

    def __init__(
        self,
        root,
        features: dict | None = None,
        fps: int = 80,
        robot_type: str | None = "sawyer",
        data_files_size_in_mb: float = 32.0,
        episode_meta: dict | None = None,
    ) -> None:
        self.root = Path(root)
        self.data_files_size_in_mb = float(data_files_size_in_mb)
        self.episode_meta_keys = dict(episode_meta or {})  # extra per-episode columns: name -> arrow type
        if (self.root / "meta" / "info.json").exists():
            self._open_existing(features)
        else:
            if not features:
                raise ValueError(f"no dataset at {self.root} and no features given to create one")
            for k in features:
                if "/" in k:
                    raise ValueError(f"feature name {k!r} may not contain '/'")
            self.info = {
                "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": 0,
                "total_frames": 0, "total_tasks": 0, "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": self.data_files_size_in_mb, "video_files_size_in_mb": 200, "fps": int(fps),
                "splits": {}, "data_path": DATA_PATH, "video_path": None,
                "features": {**{k: dict(v, shape=list(v["shape"])) for k, v in features.items()}, **DEFAULT_FEATURES},
            }  # fmt: skip
            self.tasks: list[str] = []
            self.episodes: list[dict] = []
            self.episode_stats: list[dict] = []
            self._file = (0, 0)
            self._file_tables: list[pa.Table] = []
            self._file_bytes = 0

    @property
    def features(self) -> dict:
        return {k: v for k, v in self.info["features"].items() if k not in DEFAULT_FEATURES}

    def _open_existing(self, features) -> None:
        ds = LeRobotDataset(self.root)
        if features:
            want = {k: dict(v, shape=list(v["shape"])) for k, v in features.items()}
            have = {k: v for k, v in ds.info["features"].items() if k not in DEFAULT_FEATURES}
            if {k: (v["dtype"], list(v["shape"])) for k, v in want.items()} != {
                k: (v["dtype"], list(v["shape"])) for k, v in have.items()
            }:
                raise DatasetError(
                    f"{self.root / 'meta/info.json'}: existing dataset has features {sorted(have)} with other "
                    f"dtypes/shapes than requested; write to a new directory"
                )
        self.info = ds.info
        self.tasks = list(ds.tasks)
        self.episodes = [dict(e) for e in ds.episodes]
        self.episode_stats = ds.episode_stats()
        # Continue in a new data file (as LeRobot does on resume): committed files are never rewritten.
        if self.episodes:
            last = self.episodes[-1]
            c, f = last["data/chunk_index"], last["data/file_index"] + 1
            if f >= CHUNKS_SIZE:
                c, f = c + 1, 0
            self._file = (c, f)
        else:
            self._file = (0, 0)
        self._file_tables = []
        self._file_bytes = 0

    def add_episode(self, frames: dict[str, np.ndarray], task: str, meta: dict | None = None) -> int:
        """Append one episode. ``frames`` maps each feature to an array with the episode length first."""
        feats = self.features
        missing = sorted(set(feats) - set(frames))
        extra = sorted(set(frames) - set(feats))
        if missing or extra:
            raise ValueError(f"episode frames do not match the dataset features: missing {missing}, unknown {extra}")
        lengths = {k: len(v) for k, v in frames.items()}
        length = next(iter(lengths.values()))
        if length == 0 or any(n != length for n in lengths.values()):
            raise ValueError(f"every feature needs the same, non-zero number of frames; got {lengths}")
        for k, v in frames.items():
            if feats[k]["dtype"] != "image" and not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
                raise ValueError(f"episode feature {k!r} contains NaN or inf; refusing to write it")
        if task not in self.tasks:
            self.tasks.append(task)
        task_index = self.tasks.index(task)
        ep_index = len(self.episodes)
        start = self.info["total_frames"]
        fps = self.info["fps"]

        cols = {k: _column(frames[k], feats[k]) for k in feats}
        cols["timestamp"] = pa.array(np.arange(length, dtype=np.float32) / fps, type=pa.float32())
        cols["frame_index"] = pa.array(np.arange(length, dtype=np.int64))
        cols["episode_index"] = pa.array(np.full(length, ep_index, dtype=np.int64))
        cols["index"] = pa.array(np.arange(start, start + length, dtype=np.int64))
        cols["task_index"] = pa.array(np.full(length, task_index, dtype=np.int64))
        table = pa.table(cols)

        # Roll over to a new file when this episode would push the current one past the size limit.
        if self._file_tables and self._file_bytes + table.nbytes > self.data_files_size_in_mb * 1e6:
            c, f = self._file
            self._file = (c + (f + 1) // CHUNKS_SIZE, (f + 1) % CHUNKS_SIZE)
            self._file_tables, self._file_bytes = [], 0
        self._file_tables.append(table)
        self._file_bytes += table.nbytes
        c, f = self._file
        file_table = pa.concat_tables(self._file_tables)
        hf = {"info": {"features": {k: _hf_feature(v) for k, v in self.info["features"].items()}}}
        file_table = file_table.replace_schema_metadata({"huggingface": json.dumps(hf)})
        atomic_write_table(self.root / DATA_PATH.format(chunk_index=c, file_index=f), file_table)

        stats = {k: _feature_stats(frames[k], feats[k]) for k in feats}
        stats["timestamp"] = _feature_stats(np.arange(length) / fps, DEFAULT_FEATURES["timestamp"])
        stats["frame_index"] = _feature_stats(np.arange(length), DEFAULT_FEATURES["frame_index"])
        self.episode_stats.append(stats)
        row = {
            "episode_index": ep_index, "tasks": [task], "length": length, "data/chunk_index": c,
            "data/file_index": f, "dataset_from_index": start, "dataset_to_index": start + length,
        }  # fmt: skip
        for k, v in (meta or {}).items():
            row[k] = v
        self.episodes.append(row)
        self.info["total_episodes"] = ep_index + 1
        self.info["total_frames"] = start + length
        self.info["total_tasks"] = len(self.tasks)
        self.info["splits"] = {"train": f"0:{ep_index + 1}"}
        self._write_meta()
        return ep_index

    def _meta_rows(self) -> None:
        """Bring the episodes table's columns and the running aggregate stats up to date with ``self.episodes``
        (one new row per episode: writing stays linear in the dataset's size, not quadratic)."""
        if not hasattr(self, "_cols"):
            self._cols: dict[str, list] = {}
            self._agg: dict = {}
        cols = self._cols
        done = len(next(iter(cols.values()))) if cols else 0
        for i in range(done, len(self.episodes)):
            row, st = self.episodes[i], self.episode_stats[i]
            cells = dict(row)
            for feat, d in st.items():
                for s, v in d.items():
                    cells[f"stats/{feat}/{s}"] = np.asarray(v).tolist()
            for k in cells:
                cols.setdefault(k, [None] * i)
            for k, v in cols.items():
                v.append(cells.get(k))
            self._agg = aggregate_stats([self._agg, st] if self._agg else [st])

    def _write_meta(self) -> None:
        meta = self.root / "meta"
        self._meta_rows()
        # Episodes: the fixed LeRobot columns, extra metadata columns, then per-episode stats.
        names = [k for k in self._cols if not k.startswith("stats/")] + [k for k in self._cols if k.startswith("stats/")]
        cols = {k: self._cols[k] for k in names}
        cols["meta/episodes/chunk_index"] = [0] * len(self.episodes)
        cols["meta/episodes/file_index"] = [0] * len(self.episodes)
        atomic_write_table(meta / "episodes" / "chunk-000" / "file-000.parquet", pa.table(cols))
        tasks = pa.table({"task_index": pa.array(range(len(self.tasks)), pa.int64()), "task": self.tasks})
        atomic_write_table(meta / "tasks.parquet", tasks)
        atomic_write_json(meta / "stats.json", _to_jsonable(self._agg))
        atomic_write_json(meta / "info.json", self.info)  # the commit point: written last


# ---------------------------------------------------------------------------------------------- reader
class LeRobotDataset:
    """A LeRobot v3.0 dataset on disk. Only committed episodes (per ``meta/info.json``) are visible."""

    def __init__(self, root) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not self.root.exists():
            raise DatasetError(f"dataset directory {self.root} does not exist; collect one with `rlvla collect`")
        self.info = self._read_json(info_path)
        for key in ("codebase_version", "total_episodes", "total_frames", "features", "fps", "data_path"):
            if key not in self.info:
                raise DatasetError(f"{info_path}: missing key {key!r}; the file is not LeRobot v3.0 metadata")
        if not str(self.info["codebase_version"]).startswith("v3"):
            raise DatasetError(f"{info_path}: codebase_version {self.info['codebase_version']!r} is not v3.x")
        n_eps = int(self.info["total_episodes"])
        tasks_path = self.root / "meta" / "tasks.parquet"
        tt = self._read_table(tasks_path)
        names = [c for c in tt.column_names if c in ("task", "__index_level_0__")]
        if "task_index" not in tt.column_names or not names:
            raise DatasetError(f"{tasks_path}: expected columns 'task_index' and 'task'")
        order = np.argsort(tt.column("task_index").to_numpy())
        self.tasks = [tt.column(names[0]).to_pylist()[i] for i in order]
        ep_tables = []
        ep_dir = self.root / "meta" / "episodes"
        ep_files = sorted(ep_dir.glob("chunk-*/file-*.parquet")) if ep_dir.exists() else []
        if n_eps and not ep_files:
            raise DatasetError(f"{ep_dir}: no episode metadata files, but info.json lists {n_eps} episodes")
        for p in ep_files:
            ep_tables.append(self._read_table(p))
        self._episodes_table = pa.concat_tables(ep_tables, promote_options="default").slice(0, n_eps) if ep_tables else None
        if self._episodes_table is not None and self._episodes_table.num_rows < n_eps:
            raise DatasetError(f"{ep_dir}: {self._episodes_table.num_rows} episodes, info.json says {n_eps}")
        keep = [c for c in (self._episodes_table.column_names if self._episodes_table else []) if not c.startswith("stats/")]
        self.episodes = self._episodes_table.select(keep).to_pylist() if self._episodes_table else []
        self.features = {k: v for k, v in self.info["features"].items() if k not in DEFAULT_FEATURES}
        self.image_keys = [k for k, v in self.features.items() if v["dtype"] == "image"]

    # -------------------------------------------------------------- low-level
    @staticmethod
    def _read_json(path: Path):
        if not path.exists():
            raise DatasetError(f"{path}: file is missing; is this a LeRobot v3.0 dataset directory?")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: corrupt JSON ({e}); re-collect or restore the file") from None

    @staticmethod
    def _read_table(path: Path, columns=None) -> pa.Table:
        if not path.exists():
            raise DatasetError(f"{path}: file is missing; the dataset is incomplete")
        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, OSError) as e:
            raise DatasetError(f"{path}: corrupt parquet file ({e}); re-collect or restore the file") from None

    def __len__(self) -> int:
        return int(self.info["total_frames"])

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def check_trainable(self) -> None:
        """Refuse a dataset collected on evaluation seeds (``rlvla collect --seeds eval``): such a set is for held-out
        scoring only, so that no model trains on the layouts it is evaluated on."""
        held = sum(1 for e in self.episodes if e.get("seeds") == "eval")
        if held:
            raise DatasetError(f"dataset {self.root} holds {held} episodes on evaluation seeds (collected with --seeds eval); "
                               "it is a held-out test set: train on a dataset collected on training seeds")  # fmt: skip

    @property
    def stats(self) -> dict:
        return {
            k: {s: np.asarray(v) for s, v in d.items()}
            for k, d in self._read_json(self.root / "meta" / "stats.json").items()
        }

    def episode_stats(self) -> list[dict]:
        if self._episodes_table is None:
            return []
        cols = [c for c in self._episodes_table.column_names if c.startswith("stats/")]
        out = []
        rows = self._episodes_table.select(cols).to_pylist()
        for row in rows:
            st: dict = {}
            for c, v in row.items():
                _, feat, s = c.split("/", 2)
                if v is not None:
                    st.setdefault(feat, {})[s] = np.asarray(v)
            out.append(st)
        return out

    def data_files(self) -> list[tuple[Path, int, int]]:
        """(path, first global index, end global index) of the committed rows of each data file."""
        spans: dict[tuple[int, int], list[int]] = {}
        for e in self.episodes:
            key = (e["data/chunk_index"], e["data/file_index"])
            lo, hi = e["dataset_from_index"], e["dataset_to_index"]
            if key in spans:
                spans[key] = [min(spans[key][0], lo), max(spans[key][1], hi)]
            else:
                spans[key] = [lo, hi]
        return [
            (self.root / self.info["data_path"].format(chunk_index=c, file_index=f), lo, hi)
            for (c, f), (lo, hi) in sorted(spans.items())
        ]

    def _read_rows(self, path: Path, lo: int, hi: int, columns=None) -> pa.Table:
        if columns is not None:
            columns = list(dict.fromkeys(["index", *columns]))
        t = self._read_table(path, columns)
        if "index" not in t.column_names:
            raise DatasetError(f"{path}: no 'index' column; not a LeRobot data file")
        idx = t.column("index").to_numpy()
        mask = (idx >= lo) & (idx < hi)
        t = t.filter(pa.array(mask))
        if t.num_rows != hi - lo:
            raise DatasetError(f"{path}: has {t.num_rows} of the {hi - lo} frames the metadata lists; the file is truncated")
        return t

    def _decode(self, table: pa.Table, columns=None) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k in columns or (list(self.features) + list(DEFAULT_FEATURES)):
            if k not in table.column_names:
                raise DatasetError(f"data file lacks column {k!r} listed in meta/info.json features")
            feat = self.info["features"][k]
            col = table.column(k)
            if feat["dtype"] == "image":
                out[k] = np.stack([decode_png(v["bytes"]) for v in col.to_pylist()]) if len(col) else np.zeros((0, *feat["shape"]), np.uint8)
            elif feat["dtype"] == "string":
                out[k] = np.array(col.to_pylist(), dtype=object)
            else:
                shape = list(feat["shape"])
                flat = col.combine_chunks()
                for _ in range(0 if shape == [1] else len(shape)):
                    flat = flat.flatten()
                arr = flat.to_numpy(zero_copy_only=False).astype(np.dtype(feat["dtype"]))
                out[k] = arr.reshape(len(col), *([] if shape == [1] else shape))
        return out

    # -------------------------------------------------------------- public reading
    def episode(self, i: int) -> dict[str, np.ndarray]:
        """All frames of episode ``i`` as numpy arrays (images decoded to uint8 HxWx3)."""
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range [0, {self.num_episodes})")
        e = self.episodes[i]
        path = self.root / self.info["data_path"].format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"])
        out = self._decode(self._read_rows(path, e["dataset_from_index"], e["dataset_to_index"]))
        out["task"] = np.array([self.tasks[t] for t in out["task_index"]], dtype=object)
        return out

    def read_rows(self, file: tuple[Path, int, int], columns=None) -> dict[str, np.ndarray]:
        """The committed rows of one data file (an entry of :meth:`data_files`), only ``columns`` (default all;
        leaving images out skips their decoding)."""
        path, lo, hi = file
        return self._decode(self._read_rows(path, lo, hi, columns), columns)

    def iter_batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        """Stream the dataset as :class:`rlvla.data.schema.Batch` es, one data file in memory at a time.

        Shuffling permutes the file order and the rows within each file (a bounded-memory shuffle).
        """
        import torch

        from rlvla.data.schema import Batch

        rng = np.random.default_rng(seed)
        files = self.data_files()
        order = rng.permutation(len(files)) if shuffle else np.arange(len(files))
        carry: dict[str, np.ndarray] | None = None
        for fi in order:
            path, lo, hi = files[fi]
            cols = self._decode(self._read_rows(path, lo, hi))
            if carry is not None:
                cols = {k: np.concatenate([carry[k], cols[k]]) for k in cols}
            n = len(cols["index"])
            perm = rng.permutation(n) if shuffle else np.arange(n)
            stop = n - n % batch_size
            for s in range(0, stop, batch_size):
                yield self._to_batch(cols, perm[s : s + batch_size], Batch, torch)
            carry = {k: v[perm[stop:]] for k, v in cols.items()} if stop < n else None
        if carry is not None and not drop_last and len(carry["index"]):
            yield self._to_batch(carry, np.arange(len(carry["index"])), Batch, torch)

    def _to_batch(self, cols, idx, Batch, torch):
        b = Batch()
        for k, v in cols.items():
            if v.dtype == object:
                continue
            b[k] = torch.from_numpy(np.ascontiguousarray(v[idx]))
        b["task"] = [self.tasks[t] for t in cols["task_index"][idx]]
        return b.validate()
