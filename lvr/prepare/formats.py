"""Readers of hospital ECG exports, one per format, each returning a Waveform.

    WFDB             a record <path>.hea (+ its signal files)    wfdb.rdrecord
    EDF / EDF+       "0       " in the 8-byte version field      edfio
    DICOM waveform   "DICM" at byte 128                          pydicom (waveform_array)
    Philips XML      root element <restingecgdata>               sierraecg (XLI-compressed)
    GE MUSE XML      root element <RestingECG>                   this module (documented schema)

The format is told from the file's content, never from its extension. A Waveform holds what the
file states: values in each channel's stated unit, its sampling rate and channel names;
lvr/prepare/record_beats.py maps the names to leads, converts to mV, checks the amplitudes and
resamples.
A file with 8 leads (I, II, V1-V6, as GE MUSE stores them) gets III, aVR, aVL and aVF derived
from I and II, and says so in its notes.
"""
import base64
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import edfio
import numpy as np
import pydicom
import sierraecg
import wfdb
from defusedxml import ElementTree

from lvr.leads import LEAD_BY_KEY, LIMB_LEADS_FROM_I_AND_II, lead_key

FORMAT_NAMES = {"wfdb": "WFDB", "edf": "EDF", "dicom": "DICOM", "philips": "Philips XML",
                "muse": "GE MUSE XML"}
XML_ROOTS = {"restingecgdata": "philips", "RestingECG": "muse"}
EDF_VERSION = b"0       "  # EDF's 8-byte version field (BDF's starts with byte 255)
DICOM_PREAMBLE = 128  # "DICM" follows the 128-byte preamble of a DICOM Part 10 file
# unit spellings (lower case) of WFDB, EDF, DICOM (UCUM) and GE MUSE -> millivolts per unit
MILLIVOLTS_PER_UNIT = {"mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
                       "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "microvolt": 1e-3,
                       "microvolts": 1e-3, "v": 1e3, "volt": 1e3, "volts": 1e3}
MUSE_WAVEFORMS = ("Rhythm", "Median")  # GE MUSE WaveformType, most wanted first
# Philips stores 11 s per lead: the ECG, then zeros and a 1 mV calibration pulse. The ECG ends
# where every lead is exactly 0 for this long (no real 12-lead signal does that).
PHILIPS_END_ZEROS_S = 0.02


class RecordRejected(Exception):
    """A record that cannot give beats: "kind: detail"; the summary counts reasons by kind."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")


@dataclass
class Waveform:
    """One recording as its file states it."""
    signal: np.ndarray  # float (samples, channels), each channel in its unit
    fs: float  # Hz
    channels: list  # channel names as the file writes them
    units: list  # each channel's unit as the file writes it ("" when it states none)
    format: str  # a key of FORMAT_NAMES
    notes: list = field(default_factory=list)


def millivolts_per_unit(unit):
    """How many mV one `unit` is ("uV" -> 0.001), or None for a unit not known here."""
    return MILLIVOLTS_PER_UNIT.get(str(unit).strip().lower())


# ---------------------------------------------------------------- which file, which format

def record_file(path):
    """(format, file to read) for a table's record: a WFDB record without extension, or a file."""
    path = Path(path)
    if Path(f"{path}.hea").is_file():
        return "wfdb", path
    if not path.is_file():
        raise RecordRejected("unreadable", f"file not found: {path} (nor a WFDB header "
                             f"{path.name}.hea)")
    return file_format(path), path


def record_present(path):
    """True if a table's record names an existing file or WFDB header."""
    return Path(path).is_file() or Path(f"{path}.hea").is_file()


def file_format(path):
    """The format of the file at `path`, from its first bytes (or XML root element)."""
    with open(path, "rb") as handle:
        head = handle.read(DICOM_PREAMBLE + 4)
    if head[DICOM_PREAMBLE:DICOM_PREAMBLE + 4] == b"DICM":
        return "dicom"
    if head[:8] == EDF_VERSION:
        return "edf"
    root = xml_root(path, head)
    if root in XML_ROOTS:
        return XML_ROOTS[root]
    if root is not None:
        raise RecordRejected("unknown format", f"{path.name}: XML with root element <{root}>; "
                             f"known are <restingecgdata> (Philips) and <RestingECG> (GE MUSE)")
    if re.match(rb"[^\s#/]+(/\d+)?\s+\d+(\s|$)", head.lstrip()):
        raise RecordRejected("unknown format", f"{path.name} looks like a WFDB header: name it "
                             f"<record>.hea and give the record without extension")
    raise RecordRejected("unknown format", f"{path.name} is none of WFDB (<record>.hea), EDF "
                         f"('0       ' at byte 0), DICOM ('DICM' at byte 128), Philips or GE "
                         f"MUSE XML; it starts with {head[:16]!r}")


def xml_root(path, head):
    """The local name of the XML root element of the file, or None if it is not XML."""
    if not head.lstrip().startswith((b"<", b"\xef\xbb\xbf<", b"\xff\xfe", b"\xfe\xff")):
        return None
    try:
        for _, element in ElementTree.iterparse(str(path), events=("start",)):
            return local_name(element.tag)
    except Exception:  # not XML, or broken before its root: the caller says what it is
        return None
    return None


def local_name(tag):
    """An XML tag without its namespace: "{http://www3.medical.philips.com}x" -> "x"."""
    return tag.rsplit("}", 1)[-1]


# ---------------------------------------------------------------- reading

def read_waveform(path):
    """The Waveform of a table's record, whatever its format; raises RecordRejected."""
    kind, file = record_file(path)
    try:
        waveform = READERS[kind](file)
    except RecordRejected:
        raise
    except Exception as error:  # each library raises its own types for broken files
        raise RecordRejected("unreadable", f"{FORMAT_NAMES[kind]} file {file.name}: "
                             f"{type(error).__name__}: {error}") from None
    return with_derived_limb_leads(waveform)


def wfdb_waveform(path):
    record = wfdb.rdrecord(str(path))
    if record.p_signal is None or record.p_signal.ndim != 2 or not record.fs:
        raise RecordRejected("unreadable", "no single-frequency signal in the record")
    return Waveform(record.p_signal, float(record.fs), list(record.sig_name),
                    list(record.units), "wfdb")


def edf_waveform(path):
    """The ECG leads of an EDF(+) file: the signals named as leads, which must share one rate."""
    with open(path, "rb") as handle:
        header = handle.read(256)
    stated_records = int(header[236:244].decode("ascii").strip() or -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # edfio warns and reads on about a short file: we refuse
        edf = edfio.read_edf(path)
    if stated_records not in (-1, edf.num_data_records):
        raise RecordRejected("truncated", f"EDF file {path.name}: its header states "
                             f"{stated_records} data records, the file holds "
                             f"{edf.num_data_records}")
    signals = list(edf.signals)
    leads = [s for s in signals if lead_key(s.label) in LEAD_BY_KEY] or signals
    rates = sorted({s.sampling_frequency for s in leads})
    if len(rates) > 1:
        raise RecordRejected("unreadable", f"EDF file {path.name}: the leads have different "
                             f"sampling rates ({', '.join(f'{r:g}' for r in rates)} Hz)")
    kept = [s for s in signals if s.sampling_frequency == rates[0]]
    other = [s.label for s in signals if s.sampling_frequency != rates[0]]
    notes = [f"EDF: ignored signal(s) at other rates: {', '.join(other)}"] if other else []
    length = min(len(s.data) for s in kept)
    return Waveform(np.column_stack([s.data[:length] for s in kept]), float(rates[0]),
                    [s.label for s in kept], [s.physical_dimension for s in kept], "edf", notes)


def dicom_waveform(path):
    """The rhythm multiplex of a DICOM waveform file (else its longest one), in physical units."""
    dataset = pydicom.dcmread(path)
    groups = list(dataset.get("WaveformSequence", []))
    if not groups:
        raise RecordRejected("unreadable", f"DICOM file {path.name} holds no Waveform Sequence "
                             f"(not a waveform object)")
    index = dicom_rhythm_index(groups)
    group = groups[index]
    stated = int(group.NumberOfWaveformSamples) * int(group.NumberOfWaveformChannels) \
        * int(group.WaveformBitsAllocated) // 8
    if len(group.WaveformData) < stated:
        raise RecordRejected("truncated", f"DICOM file {path.name}: waveform data holds "
                             f"{len(group.WaveformData)} of the {stated} bytes its header states")
    channels = list(group.ChannelDefinitionSequence)
    label = group.get("MultiplexGroupLabel", "")
    notes = [f"DICOM: multiplex group {index + 1} of {len(groups)} ({label or 'no label'})"]
    return Waveform(dataset.waveform_array(index), float(group.SamplingFrequency),
                    [dicom_channel_name(c) for c in channels],
                    [dicom_channel_unit(c) for c in channels], "dicom", notes)


def dicom_rhythm_index(groups):
    labelled = [i for i, g in enumerate(groups) if "RHYTHM" in str(g.get("MultiplexGroupLabel",
                                                                        "")).upper()]
    if labelled:
        return labelled[0]
    durations = [int(g.get("NumberOfWaveformSamples", 0)) / float(g.get("SamplingFrequency", 1))
                 for g in groups]
    return int(np.argmax(durations))


def dicom_channel_name(channel):
    """The channel's source code meaning ("Lead I (Einthoven)"), else its label."""
    sources = channel.get("ChannelSourceSequence", [])
    if sources and sources[0].get("CodeMeaning"):
        return str(sources[0].CodeMeaning)
    return str(channel.get("ChannelLabel", ""))


def dicom_channel_unit(channel):
    units = channel.get("ChannelSensitivityUnitsSequence", [])
    return str(units[0].get("CodeValue", "")) if units and "ChannelSensitivity" in channel else ""


def philips_waveform(path):
    """A Philips (Sierra) XML ECG: sierraecg decodes the XLI-compressed leads; the resolution
    (uV per unit) and offset come from the schema's parsedwaveforms or signalcharacteristics."""
    root = ElementTree.parse(str(path)).getroot()
    waves = first_element(root, "parsedwaveforms")
    if waves is None:
        raise RecordRejected("unreadable", f"Philips XML {path.name} has no <parsedwaveforms>")
    compression = waves.get("compression", waves.get("compressmethod", "none"))
    if compression != "XLI":
        raise RecordRejected("unsupported", f"Philips XML {path.name}: waveform compression "
                             f"{compression!r}; sierraecg reads XLI-compressed Base64 waveforms "
                             f"only: export with XLI compression or as DICOM/EDF")
    characteristics = first_element(root, "signalcharacteristics")
    resolution = float(waves.get("resolution") or element_text(characteristics, "resolution")
                       or element_text(characteristics, "signalresolution"))
    offset = float(waves.get("signaloffset") or element_text(characteristics, "signaloffset")
                   or 0)
    try:
        ecg = sierraecg.read_file(str(path))
    except sierraecg.UnsupportedXmlFileError as error:
        raise RecordRejected("unsupported", f"Philips XML {path.name}: {error} (sierraecg reads "
                             f"versions 1.03, 1.04, 1.04.01, 1.04.02)") from None
    leads = ecg.leads
    fs = float(leads[0].sampling_freq)
    raw = np.column_stack([np.asarray(lead.samples, dtype=float) for lead in leads])
    end = philips_ecg_end(raw, fs)
    notes = [f"Philips XML {ecg.doc_ver}: dropped {(len(raw) - end) / fs:.2f} s after the ECG "
             f"(zeros and calibration pulse)"] if end < len(raw) else []
    return Waveform((raw[:end] - offset) * resolution, fs, [lead.label for lead in leads],
                    ["uV"] * len(leads), "philips", notes)


def philips_ecg_end(raw, fs):
    """Samples before the first run of PHILIPS_END_ZEROS_S in which every lead is exactly 0."""
    run = max(1, int(round(PHILIPS_END_ZEROS_S * fs)))
    zero = np.all(raw == 0, axis=1).astype(np.int64)
    runs = np.convolve(zero, np.ones(run, dtype=np.int64), mode="valid")
    full = np.flatnonzero(runs == run)
    return int(full[0]) if len(full) else len(raw)


def muse_waveform(path):
    """A GE MUSE XML ECG: the Rhythm waveform (else Median), each LeadData's WaveFormData as
    base64 little-endian int16 times LeadAmplitudeUnitsPerBit, in LeadAmplitudeUnits."""
    root = ElementTree.parse(str(path)).getroot()
    waveforms = {element_text(w, "WaveformType"): w for w in root.iter("Waveform")}
    kind = next((k for k in MUSE_WAVEFORMS if k in waveforms), None)
    if kind is None:
        raise RecordRejected("unreadable", f"GE MUSE XML {path.name} has no Rhythm or Median "
                             f"<Waveform> (has: {', '.join(map(str, waveforms)) or 'none'})")
    waveform = waveforms[kind]
    fs = float(element_text(waveform, "SampleBase")) \
        * 10.0 ** int(element_text(waveform, "SampleExponent") or 0)
    names, units, columns = [], [], []
    for lead in waveform.iter("LeadData"):
        samples = np.frombuffer(base64.b64decode(element_text(lead, "WaveFormData")), "<i2")
        stated = element_text(lead, "LeadSampleCountTotal")
        name = element_text(lead, "LeadID")
        if stated and int(stated) != len(samples):
            raise RecordRejected("truncated", f"GE MUSE XML {path.name}: lead {name} holds "
                                 f"{len(samples)} of its {stated} samples")
        names.append(name)
        units.append(element_text(lead, "LeadAmplitudeUnits"))
        columns.append(samples * float(element_text(lead, "LeadAmplitudeUnitsPerBit") or 1.0))
    if len({len(c) for c in columns}) != 1:
        lengths = ", ".join(f"{name} {len(column)}"
                            for name, column in zip(names, columns, strict=True))
        raise RecordRejected("unreadable", f"GE MUSE XML {path.name}: leads of different "
                             f"lengths ({lengths})")
    return Waveform(np.column_stack(columns), fs, names, units, "muse",
                    [f"GE MUSE: {kind} waveform"])


def first_element(root, name):
    """The first element named `name` (any namespace) under `root`, or None."""
    if root is None:
        return None
    return next((e for e in root.iter() if local_name(e.tag) == name), None)


def element_text(root, name):
    """The stripped text of the first element named `name` under `root`, or ""."""
    element = first_element(root, name)
    return (element.text or "").strip() if element is not None else ""


READERS = {"wfdb": wfdb_waveform, "edf": edf_waveform, "dicom": dicom_waveform,
           "philips": philips_waveform, "muse": muse_waveform}


# ---------------------------------------------------------------- 8-lead files

def with_derived_limb_leads(waveform):
    """The waveform with III, aVR, aVL, aVF derived from I and II when it has I and II but none
    of those four (an 8-lead file): III = II - I, aVR = -(I + II)/2, aVL = I - II/2,
    aVF = II - I/2 (Einthoven's and Goldberger's laws)."""
    leads = {LEAD_BY_KEY.get(lead_key(name)): column
             for column, name in enumerate(waveform.channels)}
    if "I" not in leads or "II" not in leads or any(n in leads for n in LIMB_LEADS_FROM_I_AND_II):
        return waveform
    i, ii = leads["I"], leads["II"]
    if waveform.units[i] != waveform.units[ii]:
        return waveform  # leads I and II in different units: missing leads are reported instead
    one, two = waveform.signal[:, i], waveform.signal[:, ii]
    derived = np.column_stack([two - one, -(one + two) / 2, one - two / 2, two - one / 2])
    return replace(waveform, signal=np.column_stack([waveform.signal, derived]),
                   channels=waveform.channels + list(LIMB_LEADS_FROM_I_AND_II),
                   units=waveform.units + [waveform.units[i]] * 4,
                   notes=waveform.notes + ["derived leads III, aVR, aVL, aVF from I and II "
                                           "(the file has 8 leads)"])
