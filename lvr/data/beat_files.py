"""The files of a cohort, one at a time: each read as a plain numpy array and checked, its beats
left memory-mapped (BeatFiles joins them into one array read on demand).

Every problem with a file raises ``CohortError`` naming the file, what is wrong and what to do;
lvr.data.cohort puts the checked files together into a Cohort.
"""
import hashlib
import os

import numpy as np

from lvr.data.cohort_json import FORMAT_HELP, CohortError

CHECK_CHUNK_BYTES = 64 << 20   # bytes of a beat file read at a time when checking it for NaN/Inf
# A beat with fewer distinct values than this over its 12 leads has been cut to a few levels
# (an integer cast of mV values, a wrong gain): it carries almost no waveform.
QUANTISED_LEVELS = 16
QUANTISATION_SAMPLE = 64       # beats per group whose distinct values are counted


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def npy_array(path, allow_pickle=False, what="beat", mmap=False):
    """np.load with a clear error for everything that is not a plain numpy array file.

    `mmap`: open a numeric array memory-mapped (read-only; its pages are the file's page cache,
    not this process's memory); an object array is still loaded whole (it cannot be mapped).
    """
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as error:
        raise CohortError(f"cannot read {path} ({error.strerror})") from None
    if magic != b"\x93NUMPY":
        raise CohortError(f"{path} is not a readable .npy file (it does not start with the numpy "
                          f"file header); save the array with np.save")
    header = npy_header(path)
    if header is not None and not header[1].hasobject:
        shape, dtype, data_start = header
        expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = os.path.getsize(path)
        if size < expected:
            raise CohortError(f"{path} is truncated: its header describes an array of shape "
                              f"{shape} ({expected} bytes) but the file has {size} bytes (an "
                              f"interrupted copy or save?); write the file again with np.save")
    mmap_mode = "r" if mmap and header is not None and not header[1].hasobject else None
    try:
        return np.load(path, allow_pickle=allow_pickle, mmap_mode=mmap_mode)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise CohortError(
                f"{path} holds an object (pickled) array. Loading it would run code stored in "
                f"the file, so it is refused by default. Save the {what}s as a plain numeric "
                f"array (np.save(path, np.asarray(x, dtype=np.float32))), or, only if you trust "
                f"the file, set ALLOW_PICKLE=True (--allow_pickle=True)") from None
        raise CohortError(f"{path} is not a readable .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise CohortError(f"{path} is not a readable .npy file ({error}); save it with np.save") \
            from None
    except Exception as error:  # pickle errors when allow_pickle=True on a non-npy file
        raise CohortError(f"{path} is not a readable .npy file ({type(error).__name__}: {error})") \
            from None


def npy_header(path):
    """(shape, dtype, offset of the data) from a .npy header, or None if it cannot be parsed
    (np.load then reports the problem)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(handle)
            return shape, dtype, handle.tell()
    except Exception:  # noqa: BLE001 - any malformed header: np.load gives the message
        return None


def checked_beats(path, n_leads, allow_pickle=False):
    """The beats of one group file (N, leads, T), memory-mapped in their stored dtype (an object
    array: loaded and converted to float32), or a CohortError saying why not."""
    beats = npy_array(path, allow_pickle, mmap=True)
    if not isinstance(beats, np.ndarray) or beats.dtype == object:
        if allow_pickle and isinstance(beats, np.ndarray):
            try:
                beats = np.asarray(beats.tolist(), dtype=np.float32)
            except (ValueError, TypeError) as error:
                raise CohortError(f"{path}: its objects do not form a numeric (N, {n_leads}, T) "
                                  f"array ({error})") from None
        else:
            raise CohortError(f"{path} does not hold a numeric array")
    if not (np.issubdtype(beats.dtype, np.floating) or np.issubdtype(beats.dtype, np.integer)):
        raise CohortError(f"{path} has dtype {beats.dtype}; expected real numbers "
                          f"(float32/float64 or integers)")
    if beats.ndim != 3:
        raise CohortError(f"{path} has shape {beats.shape} ({beats.ndim} dimensions); expected "
                          f"(N beats, {n_leads} leads, T samples); {FORMAT_HELP}")
    if beats.shape[0] == 0:
        raise CohortError(f"{path} holds no beats (shape {beats.shape}); every group needs beats")
    if beats.shape[1] != n_leads:
        hint = ""
        if beats.shape[2] == n_leads:
            hint = (f" It looks like (N, T, {n_leads}): leads last. Transpose it yourself with "
                    f"np.save(path, np.transpose(x, (0, 2, 1))); it is never transposed silently.")
        raise CohortError(f"{path} has shape {beats.shape}: {beats.shape[1]} leads on axis 1, "
                          f"expected {n_leads} (N, {n_leads}, T).{hint}")
    bad = nonfinite_beats(beats)
    if bad.size:
        raise CohortError(f"{path}: {bad.size} of {beats.shape[0]} beats contain NaN or Inf "
                          f"(first: beat {bad[0]}); clean or drop them before training")
    return beats


def nonfinite_beats(beats):
    """Indices of the beats with a NaN or Inf as float32 (a float64 value beyond float32's range
    becomes Inf when read), read CHECK_CHUNK_BYTES at a time."""
    step = max(1, CHECK_CHUNK_BYTES // max(1, beats[:1].nbytes))
    with np.errstate(over="ignore"):   # the overflow is what this reports
        bad = [start + np.flatnonzero(~np.isfinite(
            np.asarray(beats[start:start + step], dtype=np.float32)).all(axis=(1, 2)))
            for start in range(0, len(beats), step)]
    return np.concatenate(bad)


def signal_warnings(beats, name):
    """Warnings, naming the file, for beats that load but can carry little or no signal: every
    beat all zeros, beats that are constant on every lead, values cut to a few levels."""
    step = max(1, CHECK_CHUNK_BYTES // max(1, beats[:1].nbytes))
    flat = zero = 0
    for start in range(0, len(beats), step):
        chunk = np.asarray(beats[start:start + step], dtype=np.float32)
        constant = np.ptp(chunk, axis=2).max(axis=1) == 0
        flat += int(constant.sum())
        zero += int((constant & (np.abs(chunk).max(axis=(1, 2)) == 0)).sum())
    n = len(beats)
    if zero == n:
        return [f"{name}: every beat is all zeros; the group carries no signal (an export that "
                f"failed?)"]
    found = []
    if flat:
        found.append(f"{name}: {flat} of {n} beats are constant on every lead (no waveform)")
    rows = np.unique(np.linspace(0, n - 1, min(n, QUANTISATION_SAMPLE)).astype(np.int64))
    levels = np.median([len(np.unique(np.asarray(beats[int(i)]))) for i in rows])
    if levels < QUANTISED_LEVELS:
        found.append(f"{name}: a beat holds {levels:.0f} distinct values (median of {len(rows)} "
                     f"beats), as if cut to a few levels by an integer cast or a wrong gain; "
                     f"store the beats as float (mV)")
    return found


def checked_patient_ids(path, n_beats, allow_pickle=False):
    ids = npy_array(path, allow_pickle, what="patient ID")
    if ids.dtype == object:
        ids = np.asarray([str(v) for v in ids.ravel()]).reshape(ids.shape)
    if ids.ndim != 1:
        raise CohortError(f"{path} has shape {ids.shape}; expected a 1-D array of {n_beats} "
                          f"patient IDs")
    if ids.shape[0] != n_beats:
        raise CohortError(f"{path} has {ids.shape[0]} patient IDs but its beat file has "
                          f"{n_beats} beats; they must match one to one")
    if np.issubdtype(ids.dtype, np.floating):
        if not np.isfinite(ids).all() or not np.all(ids == np.round(ids)):
            raise CohortError(f"{path}: patient IDs must be integers or strings, found "
                              f"non-integer floats")
        ids = ids.astype(np.int64)
    if not (np.issubdtype(ids.dtype, np.integer) or ids.dtype.kind in "US"):
        raise CohortError(f"{path} has dtype {ids.dtype}; patient IDs must be integers or strings")
    return ids.astype(str)


def whitespace_twins_problem(named_ids):
    """Why patient IDs that differ only by surrounding white space ("12" and "12 ") are refused,
    naming the files and an example, or None: kept apart they would count as two patients, and
    stripped silently the files would not say what the run used. `named_ids`: (path, IDs as
    text) of each patient-ID file."""
    unique = [(path, np.unique(ids)) for path, ids in named_ids]
    spaced = {str(value).strip() for _, values in unique for value in values
              if str(value) != str(value).strip()}
    spellings = {}   # stripped ID -> {ID as written: the first file holding it}
    for path, values in unique:
        for value in values:
            if str(value).strip() in spaced:
                spellings.setdefault(str(value).strip(), {}).setdefault(str(value), path)
    twins = [found for found in spellings.values() if len(found) > 1]
    if not twins:
        return None
    (first, first_path), (second, second_path) = list(twins[0].items())[:2]
    where = (f"in {first_path}" if first_path == second_path
             else f"in {first_path} and {second_path}")
    return (f"patient IDs differ only by surrounding spaces, e.g. {first!r} and {second!r} "
            f"{where} ({len(twins)} such ID(s)), and would count as different patients; "
            f"strip the spaces (np.char.strip) and save the patient-ID files again, or give the "
            f"patients distinct IDs")


class BeatFiles:
    """The beats of every group file as one read-only (N, leads, T) float32 array, read on demand.

    Nothing is concatenated: the files stay memory-mapped, so reading beats costs page cache
    (shared with other processes and given back under memory pressure), not private memory.
    Indexing with an int, a slice, a boolean mask or an index array returns those beats, in that
    order, as a float32 numpy array. Pickling keeps only the paths (and the arrays of groups
    that were pickled object files), so each DataLoader worker opens its own maps.
    """
    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, paths, arrays):
        self.paths, self.arrays = list(paths), list(arrays)
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.shape = (int(self.starts[-1]),) + tuple(self.arrays[0].shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            raise TypeError("BeatFiles takes beat indices only; index the beats it returns")
        rows = self.row_numbers(key)
        if rows.ndim == 0:
            return self[rows[None]][0]
        part = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows),) + self.shape[1:], dtype=np.float32)
        for p in np.unique(part):
            where = np.flatnonzero(part == p)
            local = rows[where] - self.starts[p]
            if where.size > 1 and np.all(np.diff(local) == 1):   # a run of beats: one read
                out[where] = self.arrays[p][local[0]:local[-1] + 1]
            else:
                out[where] = self.arrays[p][local]
        return out

    def row_numbers(self, key):
        """Global beat numbers (int64, non-negative) selected by `key`."""
        n = len(self)
        if isinstance(key, slice):
            return np.arange(*key.indices(n), dtype=np.int64)
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (n,):
                raise IndexError(f"boolean index of shape {key.shape} for {n} beats")
            return np.flatnonzero(key)
        if not np.issubdtype(key.dtype, np.integer):
            raise IndexError(f"beats are indexed by integers, slices or masks, not {key.dtype}")
        rows = np.where(key < 0, key + n, key).astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"beat index out of range for {n} beats")
        return rows

    def __array__(self, dtype=None, copy=None):
        beats = self[:]
        return beats if dtype is None else beats.astype(dtype, copy=False)

    def __getstate__(self):
        return {"paths": self.paths,
                "arrays": [None if isinstance(a, np.memmap) else a for a in self.arrays]}

    def __setstate__(self, state):
        arrays = [np.load(path, mmap_mode="r") if a is None else a
                  for path, a in zip(state["paths"], state["arrays"], strict=True)]
        self.__init__(state["paths"], arrays)
