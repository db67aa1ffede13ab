"""Choosing the convolution kernels by measurement, per machine (cuDNN's "benchmark mode").

The fast convolution has several algorithms for each pass (``conv.ALGORITHMS``: im2col in
two GEMM orientations, the wide path, Winograd F(2×2, 5×5), dX as a convolution or by
col2im) and a chunk size for each. Which is fastest depends on the CPU (vector width,
cache sizes) and the BLAS, not only on the shape; the built-in rules in ``conv._builtin``
were measured on one AMD EPYC. So, for one layer shape and pass:

* ``candidates(pass_, key)`` lists the algorithms valid for it, each with a few chunk
  sizes around its default (the default always among them);
* ``tune(pass_, key)`` times every candidate on random inputs of that shape, with the
  worker pool as training uses it: one warm-up call each (compilation, scratch buffers)
  not counted, then ``repeats`` rounds over all candidates in turn. Each candidate is
  ranked by its fastest round. (On a shared machine other processes only ever add time;
  at a load of 10 on 2 cores the medians of two chunk sizes of conv3's conv3 filter
  gradient came out 1.34 and 4.56 ms in one run, 2.34 and 1.33 ms in the next, whose
  minima were 0.85 and 0.91 ms. The median is kept in the file too.);
* the result (every candidate's time, not just the winner) goes into a JSON file, and
  ``conv.choose`` runs the fastest candidate allowed by ``conv_algorithm`` ("direct"
  excludes Winograd, "untuned" ignores the file); the built-in rule's choice stays
  unless another is more than ``MARGIN`` faster (``pick``).

A dense layer with a large weight has its choices too (``dense.ALGORITHMS``: OpenBLAS in
either orientation or the skinny register-blocked products), measured and cached the same
way under the passes "dense-fwd", "dense-dx" and "dense-dw" (keys from ``dense_key``).

Every candidate computes the same convolution; they differ in summation order only,
within the float32 tolerance of ``tests/test_kernels.py`` (``tests/test_tuning.py`` checks
each one against the NumPy reference). Without a measurement the built-in rules run.

When: ``scratchnet tune [RECIPE ...]`` measures every convolution of the recipes'
training steps and evaluation batches; with ``SCRATCHNET_TUNE=1`` a shape that has no
measurement is tuned at its first use (off by default, so that tests and runs never
depend on timings taken on the fly).

Where: ``<Numba cache dir>/tuning/conv-<digest>.json`` (``SCRATCHNET_TUNING_DIR``
overrides the folder), one file per ``machine()`` key: CPU model and vector extensions,
worker threads, NumPy, Numba and BLAS versions, ``KERNEL_VERSION``. A file that does not
parse, or whose key is another machine's, is ignored with one warning line; when the
folder cannot be written, the measurements stay in memory for the process.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..cpu import cpuinfo, model_name
from ._runtime import CACHE_DIR, NUM_THREADS

KERNEL_VERSION = 16  # bump when a kernel's speed changes enough to void earlier measurements
FORMAT = 2  # 2: "ms" holds the fastest round, "median_ms" the median
PASSES = ("fwd", "dx", "dw", "bwd")
REPEATS = 5
MARGIN = 0.03  # another candidate replaces the built-in rule's only if it is faster by more than this
TUNE_AT_FIRST_USE = os.environ.get("SCRATCHNET_TUNE", "").lower() in ("1", "true", "yes", "on")


# --- choices and keys ----------------------------------------------------------------------------

class Choice(NamedTuple):
    """An algorithm of ``conv.ALGORITHMS`` and its chunk size (None: the kernel's own rule;
    im2col, flipped, col2im: rows per chunk; wide, winograd, blocked, lanes: images per chunk)."""
    algorithm: str
    chunk: int | None = None

    def __str__(self) -> str:
        return self.algorithm if self.chunk is None else f"{self.algorithm}/{self.chunk}"

    @classmethod
    def parse(cls, text: str) -> Choice:
        name, _, chunk = text.partition("/")
        return cls(name, int(chunk) if chunk else None)


@lru_cache(maxsize=None)
def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name  # (NumPy computes .name in Python: 20 µs, once per dtype here)


def conv_key(x_shape, w_shape, stride: int, pads, dtype) -> tuple:
    """The shape key of a convolution: (N, H, W, C, KH, KW, F, stride, pads, dtype name),
    pads = (top, bottom, left, right) as ``spatial_geometry`` gives them. (Built on every
    call of a convolution: a few µs.)"""
    (pt, pb), (pl, pr) = pads
    return (*map(int, x_shape), *map(int, w_shape[:2]), int(w_shape[3]), int(stride),
            (int(pt), int(pb), int(pl), int(pr)), _dtype_name(dtype))


def dense_key(m: int, w_shape, dtype) -> tuple:
    """The shape key of a dense layer's product: ("dense", M, In, Out, dtype name)."""
    return ("dense", int(m), int(w_shape[0]), int(w_shape[1]), _dtype_name(dtype))


def _is_dense(pass_: str) -> bool:
    return pass_.startswith("dense-")


def key_text(pass_: str, key: tuple) -> str:
    """``"fwd 50x14x14x32 5x5x64 s1 SAME(2,2,2,2) float32"``, ``"dense-dx 10x3136x1024
    float32"``: the entry's name in the cache file."""
    if key[0] == "dense":
        return f"{pass_} {key[1]}x{key[2]}x{key[3]} {key[4]}"
    n, h, w, c, kh, kw, f, s, pads, dtype = key
    padding = "VALID" if not any(pads) else "SAME"
    return f"{pass_} {n}x{h}x{w}x{c} {kh}x{kw}x{f} s{s} {padding}({','.join(map(str, pads))}) {dtype}"


def _geometry(key):
    n, h, w, c, kh, kw, f, s, (pt, pb, pl, pr), dtype = key
    ho, wo = (h + pt + pb - kh) // s + 1, (w + pl + pr - kw) // s + 1
    return n, h, w, c, kh, kw, f, s, ho, wo, np.dtype(dtype)


# --- the candidates -------------------------------------------------------------------------------

def _around(default: int, cap: int) -> list[int]:
    """The default chunk and its half, double and quadruple, capped at one worker's share
    (bigger chunks would leave a worker idle); the default itself is never changed."""
    return sorted({default} | {max(1, min(v, cap)) for v in (default // 2, default * 2, default * 4)})


def _applicable(pass_: str, key: tuple) -> dict[str, tuple[int, int]]:
    """``{algorithm: (default chunk, largest useful chunk)}`` of the algorithms valid for
    this pass and shape (the chunk rules are the kernels' own: ``conv._chunk_rows``, …)."""
    from .blocked import VARIANTS as BLOCKED, geometry as blocked_geometry
    from .blocked import grad_applies, grad_images_per_chunk, images_per_chunk
    from .conv import WIDE_MAX_CHANNELS, _chunk_rows, _wide_chunks
    from . import lanes
    from .winograd import TILE, TILES_PER_CHUNK, winograd_applies
    if pass_ not in PASSES:
        raise ValueError(f"unknown pass {pass_!r}; one of {PASSES}")
    n, h, w, c, kh, kw, f, s, ho, wo, dtype = _geometry(key)
    share = -(-n // NUM_THREADS)  # images per worker
    rows_in, rows_out = _chunk_rows(kh * kw * c, dtype.itemsize), -(-n * ho * wo // NUM_THREADS)
    wide = _wide_chunks(kh * kw * c, ho * (wo + (kw - 1) // s), dtype.itemsize), share
    out: dict[str, tuple[int, int]] = {}
    if pass_ == "fwd":
        out["im2col"] = rows_in, rows_out
        if f <= 32:  # the transposed orientation helps where F is BLAS's narrow dimension
            out["im2col-t"] = rows_in, rows_out
    elif pass_ == "dx":
        out["col2im"] = rows_in, share * ho * wo  # the workers own whole images
        if s == 1:
            flipped = _chunk_rows(kh * kw * f, dtype.itemsize), -(-n * h * w // NUM_THREADS)
            out["flipped"] = flipped
            if c <= 32:
                out["flipped-t"] = flipped
    elif pass_ == "dw":
        out["im2col"] = rows_in, rows_out
    if pass_ in ("fwd", "dw") and dtype == np.float32:  # 16 float32 lanes per register
        out.update(dict.fromkeys(BLOCKED, (images_per_chunk(blocked_geometry(c, kh, kw, f, s, ho, wo)), share)))
    if pass_ == "dx" and grad_applies(c, s, dtype):
        chunk = grad_images_per_chunk((n, h, w, c), (n, ho, wo, f), kh, kw, s, (key[8][:2], key[8][2:]))
        out.update(dict.fromkeys(BLOCKED, (chunk, share)))
    if pass_ != "bwd" and lanes.applies(pass_, c, f, dtype):
        out["lanes"] = lanes.images_per_chunk(pass_, (n, h, w, c), (kh, kw, c, f), s, key[8][::2], (ho, wo)), share
    if pass_ in ("fwd", "dw") and c <= WIDE_MAX_CHANNELS:
        out["wide"] = wide
    if winograd_applies(kh, kw, c, f, s):
        for name, m in TILE.items():
            out[name] = max(1, TILES_PER_CHUNK[m] // (-(-ho // m) * -(-wo // m))), share
    return out


def candidates(pass_: str, key: tuple) -> list[Choice]:
    """Every algorithm and chunk size valid for this pass and shape."""
    if _is_dense(pass_):
        from .dense import applicable
        return [Choice(name) for name in applicable(pass_, key)]
    return [Choice(name, chunk) for name, (default, cap) in _applicable(pass_, key).items()
            for chunk in _around(default, cap)]


def resolved(pass_: str, choice: Choice, key: tuple) -> Choice:
    """``choice`` with the chunk its kernel's own rule picks when it says None."""
    if choice.chunk is not None or choice.algorithm == "split" or _is_dense(pass_):
        return choice
    default = _applicable(pass_, key).get(choice.algorithm)
    return Choice(choice.algorithm, default[0]) if default else choice


# --- timing ---------------------------------------------------------------------------------------

def _arrays(key, seed: int = 0):
    rng = np.random.default_rng(seed)
    if key[0] == "dense":
        _, m, k, n, dtype = key
        return tuple(rng.standard_normal(shape).astype(dtype) for shape in ((m, k), (k, n), (m, n)))
    n, h, w, c, kh, kw, f, s, ho, wo, dtype = _geometry(key)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    wt = (rng.standard_normal((kh, kw, c, f)) * 0.1).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    dy = rng.standard_normal((n, ho, wo, f)).astype(dtype)
    pads = ((key[8][0], key[8][1]), (key[8][2], key[8][3]))
    return x, wt, b, dy, (x, wt, s, (ho, wo), pads)


def runner(pass_: str, choice: Choice, key: tuple, arrays=None):
    """A zero-argument callable running one pass of ``key`` by ``choice`` (for timing and tests)."""
    from . import conv, dense
    if _is_dense(pass_):
        x, w, dy = arrays if arrays is not None else _arrays(key)
        algorithm = choice.algorithm
        return {"dense-fwd": lambda: dense.forward_with(algorithm, x, w),
                "dense-dx": lambda: dense.input_grad_with(algorithm, dy, w),
                "dense-dw": lambda: dense.weight_grad_with(algorithm, x, dy)}[pass_]
    x, w, b, dy, cache = arrays if arrays is not None else _arrays(key)
    stride, out_hw, pads = cache[2:]
    if pass_ == "fwd":
        return lambda: conv.forward_with(choice, x, w, b, stride, pads, out_hw)
    if pass_ == "dx":
        return lambda: conv.input_grad_with(choice, dy, cache)
    if pass_ == "dw":
        return lambda: conv.filter_grad_with(choice, dy, cache)
    return lambda: conv.backward_with(choice, dy, cache)


def _read_only_input(arrays):
    """``arrays`` (of ``_arrays``) with a read-only copy of x: what a first layer gets from
    the caller (``load_mnist``'s arrays are read-only). Numba compiles a kernel apart for
    read-only arrays, which would otherwise happen in the first step or evaluation."""
    x = arrays[0].copy()
    x.flags.writeable = False
    if len(arrays) == 3:  # dense: x, w, dy
        return (x, *arrays[1:])
    _, w, b, dy, cache = arrays
    return x, w, b, dy, (x, *cache[1:])


def time_candidates(pass_: str, key: tuple, repeats: int = REPEATS, choices=None) -> dict[str, dict[str, float]]:
    """``{"ms": fastest round, "median_ms": median}`` of each candidate, in milliseconds:
    warm-up calls each (not counted: one on the timed inputs, one with x read-only, which
    compiles those kernels too), then ``repeats`` rounds over all candidates in turn."""
    arrays = _arrays(key)
    choices = choices or candidates(pass_, key)
    frozen = _read_only_input(arrays)
    for c in choices:
        runner(pass_, c, key, frozen)()
    runs = {str(c): runner(pass_, c, key, arrays) for c in choices}
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, repeats)):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return {"ms": {name: round(1e3 * min(t), 4) for name, t in times.items()},
            "median_ms": {name: round(1e3 * float(np.median(t)), 4) for name, t in times.items()}}


# --- the machine and the cache file -----------------------------------------------------------------

_VECTOR = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "neon", "asimd", "sve")


def machine() -> dict:
    """What the measurements depend on. A cache file is used only on an exact match."""
    import numba
    info = cpuinfo()
    flags = (info.get("flags") or info.get("Features") or "").split()
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # an older NumPy or an unusual build: the name is enough to differ
        blas = "unknown"
    return {"cpu": model_name(info),
            "cpu_id": " ".join(f"{k} {info[k]}" for k in ("vendor_id", "cpu family", "model") if k in info),
            "vector": sorted(fl for fl in flags if fl in _VECTOR or fl.startswith(("avx512", "amx"))),
            "threads": NUM_THREADS, "numpy": np.__version__, "numba": numba.__version__, "blas": blas,
            "kernels": KERNEL_VERSION}


def cache_dir() -> Path:
    return Path(os.environ.get("SCRATCHNET_TUNING_DIR") or Path(CACHE_DIR) / "tuning")


def cache_path(mach: dict) -> Path:
    digest = hashlib.sha256(json.dumps(mach, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"conv-{digest}.json"


_warned: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per process and message (never a traceback)."""
    if message not in _warned:
        _warned.add(message)
        print(f"scratchnet: warning: {message}", file=sys.stderr)


def _valid_entry(pass_: str, entry) -> dict | None:
    """The entry's candidates that this scratchnet knows, or None if it is malformed."""
    from .conv import ALGORITHMS
    from .dense import ALGORITHMS as DENSE
    if not isinstance(entry, dict) or not isinstance(entry.get("ms"), dict):
        return None
    known = {**ALGORITHMS, **DENSE}.get(pass_, ())
    ms = {}
    for name, t in entry["ms"].items():
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            return None
        try:
            choice = Choice.parse(name)
        except ValueError:
            return None
        if choice.algorithm in known and (choice.chunk is None or choice.chunk > 0):
            ms[str(choice)] = float(t)
    return {**entry, "ms": ms}


class Store:
    """The measurements of one machine: ``entries[key_text] = {"ms": {choice: ms}, ...}``,
    read from and written to ``path`` (None: memory only)."""

    def __init__(self, path: Path | None, mach: dict | None = None):
        self.machine = mach if mach is not None else machine()
        self.path = path
        self.entries: dict[str, dict] = self._read(warn_about=True) if path is not None else {}
        self.memo: dict = {}

    def _read(self, warn_about: bool) -> dict:
        say = warn if warn_about else (lambda message: None)
        try:
            text = self.path.read_text()
        except (FileNotFoundError, NotADirectoryError):  # nothing measured yet
            return {}
        except OSError as e:
            say(f"tuning cache {self.path}: cannot read it ({e.strerror or e}); built-in convolution choices")
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
                raise ValueError("no 'entries' table")
        except ValueError as e:
            say(f"tuning cache {self.path}: not a tuning file ({str(e).splitlines()[0][:80]}); ignored "
                "(`scratchnet tune --force` rewrites it)")
            return {}
        if data.get("format") != FORMAT:
            say(f"tuning cache {self.path}: format {data.get('format')!r}, this scratchnet writes {FORMAT}; ignored "
                "(`scratchnet tune` measures again)")
            return {}
        if data.get("machine") != self.machine:
            theirs = data.get("machine") if isinstance(data.get("machine"), dict) else {}
            differ = [k for k in self.machine if theirs.get(k) != self.machine[k]] or ["format"]
            say(f"tuning cache {self.path}: measured on another machine or library versions "
                f"({', '.join(differ)} differ); ignored")
            return {}
        entries = {}
        for name, entry in data["entries"].items():
            good = _valid_entry(str(name).split(" ")[0], entry)
            if good is None:
                say(f"tuning cache {self.path}: entry {name!r} is malformed; ignored")
                continue
            entries[name] = good
        return entries

    def put(self, name: str, entry: dict) -> None:
        self.entries[name] = entry
        self.memo.clear()
        self.save()

    def save(self) -> None:
        """Write atomically (a temporary file in the same folder, then a rename), keeping the
        entries another process wrote meanwhile. If that fails, keep them in memory."""
        if self.path is None:
            return
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            merged = {**self._read(warn_about=False), **self.entries}
            data = {"format": FORMAT, "machine": self.machine, "entries": dict(sorted(merged.items()))}
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".conv-", suffix=".tmp",
                                             delete=False) as f:
                tmp = f.name
                json.dump(data, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
        except OSError as e:
            warn(f"cannot write the tuning cache {self.path} ({e.strerror or e}); "
                 "the measurements stay in memory for this process")
            self.path = None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


_store: Store | None = None


def store() -> Store:
    """The process's store, read at first use."""
    global _store
    if _store is None:
        mach = machine()
        _store = Store(cache_path(mach), mach)
    return _store


# --- tuning and looking up -------------------------------------------------------------------------

def tune(pass_: str, key: tuple, *, repeats: int = REPEATS, force: bool = False, into: Store | None = None) -> dict:
    """Measure (unless already measured and not ``force``) and store one pass of one shape.
    "bwd" (Winograd's joint dx + dw) also measures dx and dw, its alternative."""
    st = into or store()
    name = key_text(pass_, key)
    if pass_ == "bwd":
        for part in ("dx", "dw"):
            tune(part, key, repeats=repeats, force=force, into=st)
    if name in st.entries and not force:
        return st.entries[name]
    entry = {**time_candidates(pass_, key, repeats), "repeats": repeats,
             "tuned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    st.put(name, entry)
    return entry


def tunable(pass_: str, key: tuple) -> bool:
    """Whether the pass has alternatives to measure ("bwd": only where Winograd applies)."""
    return bool(candidates(pass_, key))


def ranking(pass_: str, key: tuple, *, winograd: bool = True, st: Store | None = None) -> list[tuple[str, float]]:
    """The measured candidates, fastest first (Winograd left out unless ``winograd``). For
    "bwd" the alternative "split" is the sum of dx's and dw's fastest."""
    st = st or store()
    entry = st.entries.get(key_text(pass_, key))
    if entry is None:
        return []
    rows = [(c, t) for c, t in entry["ms"].items() if winograd or not c.startswith("winograd")]
    if pass_ == "bwd":
        parts = [ranking(p, key, winograd=winograd, st=st) for p in ("dx", "dw")]
        if all(parts):
            rows.append(("split", round(parts[0][0][1] + parts[1][0][1], 4)))
    return sorted(rows, key=lambda r: r[1])


def builtin(pass_: str, key: tuple, *, winograd: bool = True) -> Choice:
    """The built-in rule's choice (``conv._builtin``, ``dense.builtin``), its chunk resolved."""
    if _is_dense(pass_):
        from . import dense
        return Choice(dense.builtin(pass_, key))
    from .conv import _builtin
    return resolved(pass_, _builtin(pass_, key, winograd=winograd), key)


def pick(pass_: str, key: tuple, *, winograd: bool = True, st: Store | None = None) -> tuple[Choice, float] | None:
    """The chosen candidate and its time: the fastest, except that the built-in rule's choice
    stays unless another is faster by more than ``MARGIN`` (timing noise does not move it)."""
    ranked = ranking(pass_, key, winograd=winograd, st=st)
    if not ranked:
        return None
    ms = dict(ranked)
    builtin_ = str(builtin(pass_, key, winograd=winograd))
    name = builtin_ if builtin_ in ms and ms[builtin_] <= ranked[0][1] * (1 + MARGIN) else ranked[0][0]
    return Choice.parse(name), ms[name]


def measured(pass_: str, key: tuple, *, winograd: bool = True, first_use: bool | None = None) -> Choice | None:
    """The measured choice (``pick``) for this pass and shape, or None if it was not measured
    (then, with ``SCRATCHNET_TUNE=1``, it is measured now)."""
    st = store()
    first_use = TUNE_AT_FIRST_USE if first_use is None else first_use
    memo = (pass_, key, winograd, first_use)
    if memo in st.memo:
        return st.memo[memo]
    if first_use and key_text(pass_, key) not in st.entries and tunable(pass_, key):
        try:
            tune(pass_, key, into=st)
        except (MemoryError, RuntimeError, ValueError) as e:  # e.g. no memory for a candidate's buffers
            warn(f"tuning {key_text(pass_, key)} failed ({type(e).__name__}: {e}); the built-in choice runs")
    picked = pick(pass_, key, winograd=winograd, st=st)
    choice = picked[0] if picked else None
    st.memo[memo] = choice
    return choice


def dense_choice(pass_: str, key: tuple, *, first_use: bool | None = None) -> tuple[Choice, str]:
    """What a dense layer's ``pass_`` runs for ``key`` and where that comes from: measured
    ("measured", unless the convolutions' mode is "untuned", which keeps every built-in
    rule) or "built-in"."""
    from . import conv
    st = store()
    first_use = TUNE_AT_FIRST_USE if first_use is None else first_use
    untuned = conv._algorithm == "untuned"
    memo = ("choice", pass_, key, untuned, first_use)
    if memo not in st.memo:
        got = None if untuned else measured(pass_, key, first_use=first_use)
        st.memo[memo] = (got, "measured") if got else (builtin(pass_, key), "built-in")
    return st.memo[memo]


# --- what each layer runs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanRow:
    layer: str      # the Conv2D's or Dense's name
    pass_: str      # fwd, dx, dw
    key: tuple      # conv_key or dense_key
    choice: Choice  # what the fast backend runs
    source: str     # "measured" or "built-in"
    joint: bool = False  # dx and dw in one Winograd pass

    def __str__(self) -> str:
        return f"{self.layer} {self.pass_} {self.choice}{' (dx+dw)' if self.joint else ''}"


def _layers(model) -> list:
    """The layers of a ``Sequential``, a ``Recipe`` or a recipe's name."""
    if isinstance(model, str):
        from ..recipes import RECIPES
        model = RECIPES[model]
    return model.layers() if callable(getattr(model, "layers", None)) else model.layers


def conv_layers(model, batch: int) -> list[tuple]:
    """``(layer, x_shape, first)`` for each Conv2D of ``model`` (a ``Sequential``, a ``Recipe``
    or a recipe's name) at batch size ``batch``; ``first``: the first layer with parameters,
    whose input gradient a training step skips."""
    from ..layers import BatchNorm, Conv2D, Dropout, MaxPool2D, _Pointwise
    from ..ops.conv import spatial_geometry
    shape, out, seen_params = (batch, 28, 28, 1), [], False
    for layer in _layers(model):
        has_params = bool(layer.param_specs())
        if isinstance(layer, Conv2D) and shape is not None:
            out.append((layer, shape, not seen_params))
            (ho, wo), _ = spatial_geometry(shape, layer.kernel_size, (layer.stride,) * 2, layer.padding)
            shape = (batch, ho, wo, layer.out_channels)
        elif isinstance(layer, MaxPool2D) and shape is not None:
            (ho, wo), _ = spatial_geometry(shape, layer.pool_size, layer.stride, layer.padding)
            shape = (batch, ho, wo, shape[3])
        elif not isinstance(layer, (_Pointwise, BatchNorm, Dropout)):
            shape = None  # Flatten, Dense, Reshape, LSTM: no convolution follows in any recipe
        seen_params = seen_params or has_params
    return out


def dense_layers(model, batch: int, dtype=np.float32) -> list[tuple]:
    """``(layer, key, first)`` for each Dense of ``model`` (as for ``conv_layers``) whose
    weight is large enough to have a choice of products (``dense.BIG_WEIGHT``)."""
    from ..layers import Dense
    from .dense import BIG_WEIGHT
    out, seen_params = [], False
    for layer in _layers(model):
        if isinstance(layer, Dense) and layer.in_features * layer.out_features >= BIG_WEIGHT:
            out.append((layer, dense_key(batch, (layer.in_features, layer.out_features), dtype), not seen_params))
        seen_params = seen_params or bool(layer.param_specs())
    return out


def layer_key(layer, x_shape, dtype) -> tuple:
    from ..ops.conv import spatial_geometry
    _, pads = spatial_geometry(x_shape, layer.kernel_size, (layer.stride,) * 2, layer.padding)
    return conv_key(x_shape, (*layer.kernel_size, layer.in_channels, layer.out_channels), layer.stride, pads, dtype)


def conv_plan(model, batch: int, dtype=np.float32, *, training: bool = True,
              every_input_grad: bool = False) -> list[PlanRow]:
    """What the fast backend runs for each convolution and each large dense layer of ``model``
    (a ``Sequential``, a ``Recipe`` or a recipe's name) at this batch size, under the current
    ``conv_algorithm``:
    a training step (fwd, then dw, and dx unless it is the first layer or
    ``every_input_grad``) or, with ``training=False``, a forward pass. Looking up never
    measures."""
    from . import conv
    mode = conv._algorithm
    rows = []

    def row(layer, pass_, key, joint=False, choice=None):
        got = measured(pass_, key, winograd=mode == "auto", first_use=False) if mode != "untuned" else None
        choice = choice or got or conv._builtin(pass_, key, winograd=mode != "direct")
        rows.append(PlanRow(layer.name or "conv", pass_, key, choice, "measured" if got else "built-in", joint))

    for layer, shape, first in conv_layers(model, batch):
        first = first and not every_input_grad
        key = layer_key(layer, shape, dtype)
        row(layer, "fwd", key)
        if not training:
            continue
        both = None if first else conv.choose("bwd", key, first_use=False)
        if both is not None and both.algorithm in conv.TILE:  # Winograd's dx and dw in one pass
            row(layer, "dx", key, True, both)
            row(layer, "dw", key, True, both)
        else:
            if not first:
                row(layer, "dx", key)
            row(layer, "dw", key)
    for layer, key, first in dense_layers(model, batch, dtype):
        first = first and not every_input_grad
        for pass_ in ["fwd"] + (([] if first else ["dx"]) + ["dw"] if training else []):
            choice, source = dense_choice(f"dense-{pass_}", key, first_use=False)
            rows.append(PlanRow(layer.name or "dense", pass_, key, choice, source))
    return rows


def choice_for(pass_: str, x_shape, w_shape, stride: int = 1, padding: str = "SAME", dtype=np.float32) -> Choice:
    """What ``conv2d_*`` of the fast backend runs now for one pass ("fwd", "dx", "dw"; "bwd":
    joint Winograd or split) of x [N, H, W, C] and w [KH, KW, C, F] (measured or built-in;
    never measures). For benchmarks that label their rows by algorithm."""
    from ..ops.conv import spatial_geometry
    from . import conv
    _, pads = spatial_geometry(x_shape, w_shape[:2], (stride, stride), padding)
    return conv.choose(pass_, conv_key(x_shape, w_shape, stride, pads, dtype), first_use=False)


def plan_text(rows: list[PlanRow]) -> str:
    """``conv1 fwd wide/2, dw wide/2; conv2 fwd im2col/320 ...`` (one line)."""
    layers: dict[str, list[str]] = {}
    for r in rows:
        layers.setdefault(r.layer, []).append(f"{r.pass_} {r.choice}{'+' if r.joint else ''}")
    return "; ".join(f"{name} {', '.join(parts)}" for name, parts in layers.items())


def describe() -> str:
    """One line: where the convolution choices of this process come from."""
    st = store()
    if st.entries:
        return (f"convolution kernels: measured on this machine for {len(st.entries)} layer passes "
                f"({st.path or 'in memory'}); the rest by the built-in rules")
    return ("convolution kernels: built-in rules (no tuning cache for this machine; `scratchnet tune` "
            "measures the candidates)")
