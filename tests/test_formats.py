"""Hospital ECG formats (lvr/prepare/formats.py) through prepare_data: each format written here
from a shipped PTB-XL WFDB record by that format's own writer (edfio, pydicom) or by a generator
that follows the vendor's schema (Philips XML with XLI compression, GE MUSE XML) gives the WFDB
record's beats; broken files, wrong units, missing leads and unknown formats get clear reasons."""
import base64
import json
from pathlib import Path

import edfio
import numpy as np
import pytest
import wfdb
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import lvr.prepare.formats as formats
import lvr.prepare.record_beats as record_beats
from helpers import OPTIONS, options, reason_of, record_path, run_prepare_data
from lvr.leads import LEAD_BY_KEY, LEAD_NAMES, lead_key

ORIGINAL = record_path(1)  # NORM, 64 bpm, 10 s at 500 Hz, 1 uV per unit
EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
# DICOM CID 3001 (SCPECG) code meanings, as in pydicom's and Mortara's example files
DICOM_MEANINGS = {"I": "Lead I (Einthoven)", "aVR": "Lead aVR (Goldberger)"}


@pytest.fixture(scope="module")
def original():
    """(signal in mV, lead names, fs, beats) of the WFDB original."""
    record = wfdb.rdrecord(str(ORIGINAL))
    return (record.p_signal, list(record.sig_name), record.fs,
            record_beats.record_beats(ORIGINAL, OPTIONS))


def counts(x_mv, per_unit_uv):
    """x in mV as int16 sample values of `per_unit_uv` microvolts each."""
    return np.round(np.asarray(x_mv) * 1000.0 / per_unit_uv).astype(np.int16)


# ------------------------------------------------------------------ writers

def write_edf(path, x_mv, names, fs, unit="mV"):
    """EDF by edfio, 1 digital step = 1 uV (WFDB's resolution) when unit is mV."""
    scale = {"mV": 1.0, "uV": 1000.0}[unit]
    signals = [edfio.EdfSignal(x_mv[:, i] * scale, fs, label=name, physical_dimension=unit,
                               physical_range=(-32.768 * scale, 32.767 * scale))
               for i, name in enumerate(names)]
    edfio.Edf(signals, data_record_duration=len(x_mv) / fs).write(path)
    return path


def dicom_code(value, scheme, meaning):
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def dicom_multiplex(x_mv, names, fs, label, unit, sensitivity):
    group = Dataset()
    group.MultiplexGroupTimeOffset = 0
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(names)
    group.NumberOfWaveformSamples = len(x_mv)
    group.SamplingFrequency = fs
    group.MultiplexGroupLabel = label
    channels = []
    for name in names:
        channel = Dataset()
        channel.ChannelSourceSequence = [dicom_code(
            "5.6.3-9-1", "SCPECG", DICOM_MEANINGS.get(name, f"Lead {name}"))]
        if unit:
            channel.ChannelSensitivity = sensitivity
            channel.ChannelSensitivityUnitsSequence = [dicom_code(unit, "UCUM", unit)]
            channel.ChannelSensitivityCorrectionFactor = 1
        channel.ChannelBaseline = 0
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = channels
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    per_unit_uv = sensitivity * {"uV": 1.0, "mV": 1000.0, "": 1.0}[unit]
    group.WaveformData = counts(x_mv, per_unit_uv).astype("<i2").tobytes()
    return group


def write_dicom(path, x_mv, names, fs, unit="uV", sensitivity=1.0):
    """A 12-lead ECG Waveform Storage file (pydicom): a median-beat multiplex first, then the
    rhythm, both with Channel Source code meanings and sensitivity units."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"  # 12-lead ECG waveform
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "ECG"
    dataset.WaveformSequence = [
        dicom_multiplex(x_mv[:600], names, fs, "MEDIAN BEAT", unit, sensitivity),
        dicom_multiplex(x_mv, names, fs, "RHYTHM", unit, sensitivity)]
    dataset.save_as(path, enforce_file_format=True)
    return path


def lzw_codes(data, bits=10):
    """LZW of `data` as sierraecg's decoder reads it: codes of `bits` bits, MSB first, the table
    growing from 256 up to 2**bits - 2 and then frozen."""
    table = {bytes([i]): i for i in range(256)}
    largest, codes, word = (1 << bits) - 2, [], b""
    for value in data:
        longer = word + bytes([value])
        if longer in table:
            word = longer
            continue
        codes.append(table[word])
        if len(table) <= largest:
            table[longer] = len(table)
        word = bytes([value])
    codes.append(table[word])
    stream = "".join(format(code, f"0{bits}b") for code in codes)
    stream += "0" * (-len(stream) % 8)
    return int(stream, 2).to_bytes(len(stream) // 8, "big")


def xli_chunk(samples):
    """One lead in Philips XLI: second differences (+64) as high bytes then low bytes, LZW,
    behind an 8-byte header (size, unused, first difference)."""
    s = np.asarray(samples, dtype=np.int64)
    deltas = np.full(len(s), 64, dtype=np.int64)
    deltas[:2] = s[:2]
    deltas[2:-1] = 2 * s[2:-1] - s[1:-2] - s[3:] + 64
    first = int(2 * s[1] - s[0] - s[2])
    words = deltas.astype(np.int16).astype(np.uint16)
    packed = lzw_codes(bytes((words >> 8).astype(np.uint8)) + bytes((words & 255).astype(np.uint8)))
    return (len(packed).to_bytes(4, "little") + b"\0\0" + first.to_bytes(2, "little", signed=True)
            + packed)


def philips_stored(leads):
    """The 12 leads (I..V6, int) as Philips XLI stores them: III, aVR, aVL, aVF as residuals
    from what I and II predict (the inverse of sierraecg's reconstruction)."""
    i, ii, iii, avr, avl, avf = (np.asarray(lead, dtype=np.int64) for lead in leads[:6])
    return [i, ii, ii - i - iii, -avr - (i + ii) // 2, (i - iii) // 2 - avl,
            (ii + iii) // 2 - avf] + [np.asarray(lead, dtype=np.int64) for lead in leads[6:]]


def write_philips(path, x_mv, fs, resolution=5.0, compression="XLI"):
    """Philips SierraECG 1.04.01 XML: 11 s per lead (the ECG, zeros, a 1 mV calibration pulse,
    zeros, as PageWriters write), XLI-compressed, `resolution` uV per unit."""
    n = int(11 * fs)
    leads = np.zeros((n, 12), dtype=np.int64)
    leads[:len(x_mv)] = counts(x_mv, resolution)
    pulse = len(x_mv) + int(0.2 * fs)
    leads[pulse:pulse + int(0.1 * fs)] = int(round(1000 / resolution))
    if compression == "XLI":
        data = b"".join(xli_chunk(lead) for lead in philips_stored(list(leads.T)))
    else:
        data = leads.T.astype("<i2").tobytes()
    Path(path).write_text(f"""<?xml version="1.0" encoding="utf-8"?>
<restingecgdata xmlns="http://www3.medical.philips.com" status="New" lang="en">
  <documentinfo><documentname>test.xml</documentname><documenttype>PhilipsECG</documenttype>
    <documentversion>1.04.01</documentversion></documentinfo>
  <reportinfo/>
  <dataacquisition><signalcharacteristics><samplingrate>{fs:g}</samplingrate>
    <resolution>{resolution:g}</resolution><acquisitiontype>10-WIRE</acquisitiontype>
    <bitspersample>16</bitspersample><signaloffset>0</signaloffset>
    <signalsigned>True</signalsigned><numberchannelsallocated>12</numberchannelsallocated>
    <numberchannelsvalid>12</numberchannelsvalid></signalcharacteristics></dataacquisition>
  <waveforms><parsedwaveforms dataencoding="Base64" compression="{compression}"
    numberofleads="12" leadlabels="{' '.join(LEAD_NAMES)}" durationperchannel="11000"
    samplespersecond="{fs:g}" resolution="{resolution:g}" signaloffset="0" signalsigned="True"
    bitspersample="16" hipass="0.05" lowpass="150" notchfiltered="False"
    >{base64.b64encode(data).decode()}</parsedwaveforms></waveforms>
</restingecgdata>
""", encoding="utf-8")
    return path


def muse_lead(name, values, per_bit, units):
    data = values.astype("<i2").tobytes()
    text = base64.encodebytes(data).decode()  # MUSE breaks the base64 into lines
    return f"""    <LeadData><LeadByteCountTotal>{len(data)}</LeadByteCountTotal>
      <LeadTimeOffset>0</LeadTimeOffset><LeadSampleCountTotal>{len(values)}</LeadSampleCountTotal>
      <LeadAmplitudeUnitsPerBit>{per_bit:g}</LeadAmplitudeUnitsPerBit>
      <LeadAmplitudeUnits>{units}</LeadAmplitudeUnits><LeadHighLimit>32767</LeadHighLimit>
      <LeadLowLimit>-32768</LeadLowLimit><LeadID>{name}</LeadID>
      <LeadOffsetFirstSample>0</LeadOffsetFirstSample><FirstSampleBaseline>0</FirstSampleBaseline>
      <LeadSampleSize>2</LeadSampleSize><LeadOff>FALSE</LeadOff><BaselineSway>FALSE</BaselineSway>
      <WaveFormData>{text}</WaveFormData></LeadData>
"""


def muse_waveform(kind, x_mv, names, fs, per_bit, units):
    per_bit_uv = per_bit * (1000.0 if units == "MILLIVOLTS" else 1.0)
    leads = "".join(muse_lead(name, counts(x_mv[:, i], per_bit_uv), per_bit, units)
                    for i, name in enumerate(names))
    return f"""  <Waveform><WaveformType>{kind}</WaveformType>
    <WaveformStartTime>0</WaveformStartTime>
    <NumberofLeads>{len(names)}</NumberofLeads><SampleType>CONTINUOUS_SAMPLES</SampleType>
    <SampleBase>{fs:g}</SampleBase><SampleExponent>0</SampleExponent>
    <HighPassFilter>16</HighPassFilter><LowPassFilter>150</LowPassFilter><ACFilter>NONE</ACFilter>
{leads}  </Waveform>
"""


def write_muse(path, x_mv, names, fs, per_bit=4.88, units="MICROVOLTS"):
    """GE MUSE XML as MUSE exports it: a Median waveform, then the Rhythm one; `names` are the
    leads stored (MUSE stores the 8 of EIGHT_LEADS)."""
    Path(path).write_text(f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<!DOCTYPE RestingECG SYSTEM "restecg.dtd">
<RestingECG>
  <MuseInfo><MuseVersion>9.0.9.18167</MuseVersion></MuseInfo>
  <TestDemographics><DataType>RESTING</DataType><Site>1</Site></TestDemographics>
{muse_waveform("Median", x_mv[:600], names, fs, per_bit, units)}\
{muse_waveform("Rhythm", x_mv, names, fs, per_bit, units)}</RestingECG>
""", encoding="iso-8859-1")
    return path


def columns(x, names, wanted):
    return x[:, [names.index(name) for name in wanted]]


def format_file(kind, folder, name, x, names, fs):
    """The original's signal written in format `kind` as folder/name."""
    path = Path(folder) / name
    if kind == "edf":
        return write_edf(path, x, names, fs)
    if kind == "dicom":
        return write_dicom(path, x, names, fs)
    if kind == "philips":
        return write_philips(path, x, fs)
    return write_muse(path, columns(x, names, EIGHT_LEADS), EIGHT_LEADS, fs)


# quantisation of each writer: 1 uV (EDF, DICOM), 5 uV (Philips), 4.88 uV (MUSE), plus the
# 1 uV of the original and MUSE's limb leads derived from two quantised leads
TOLERANCE_MV = {"edf": 1e-5, "dicom": 1e-5, "philips": 0.004, "muse": 0.006}


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize("kind", ["edf", "dicom", "philips", "muse"])
def test_each_format_gives_the_beats_of_the_wfdb_original(tmp_path, original, kind):
    x, names, fs, expected = original
    path = format_file(kind, tmp_path, f"ecg.{kind}", x, names, fs)
    result = record_beats.record_beats(path, OPTIONS)
    assert result.info["format"] == kind
    np.testing.assert_array_equal(result.r_peaks, expected.r_peaks)
    np.testing.assert_allclose(result.beats, expected.beats, atol=TOLERANCE_MV[kind])


def test_eight_lead_muse_file_derives_the_limb_leads_of_the_original(tmp_path, original):
    x, names, fs, expected = original
    path = write_muse(tmp_path / "muse.xml", columns(x, names, EIGHT_LEADS), EIGHT_LEADS, fs,
                      per_bit=1.0)
    waveform = formats.read_waveform(path)
    assert waveform.channels == list(EIGHT_LEADS) + ["III", "aVR", "aVL", "aVF"]
    assert any(note.startswith("derived leads III, aVR, aVL, aVF") for note in waveform.notes)
    result = record_beats.record_beats(path, OPTIONS)
    limb = [LEAD_NAMES.index(lead) for lead in ("III", "aVR", "aVL", "aVF")]
    # PTB-XL's own limb leads are I and II combined, each stored to 1 uV
    np.testing.assert_allclose(result.beats[:, limb], expected.beats[:, limb], atol=0.002)
    np.testing.assert_allclose(np.delete(result.beats, limb, axis=1),
                               np.delete(expected.beats, limb, axis=1), atol=1e-5)


def test_content_decides_the_format_not_the_extension(tmp_path, original):
    x, names, fs, expected = original
    misnamed = {"edf": "ecg.xml", "dicom": "ecg.edf", "philips": "ecg.dcm", "muse": "ecg.dat"}
    for kind, name in misnamed.items():
        path = format_file(kind, tmp_path, name, x, names, fs)
        assert formats.record_file(path) == (kind, path)
        assert len(record_beats.record_beats(path, OPTIONS).beats) == len(expected.beats)
    no_extension = write_edf(tmp_path / "plain", x, names, fs)
    assert formats.record_file(no_extension) == ("edf", no_extension)


def test_a_real_philips_layout_read_by_sierraecg(tmp_path, original):
    # the generator's XLI stream decodes to the exact stored samples, calibration tail included
    import sierraecg
    x, names, fs, _ = original
    path = write_philips(tmp_path / "philips.xml", x, fs)
    decoded = np.column_stack([lead.samples for lead in sierraecg.read_file(str(path)).leads])
    np.testing.assert_array_equal(decoded[:len(x)], counts(x, 5.0))
    assert decoded[len(x) + 100:len(x) + 150].min() == 200  # the 1 mV pulse, in 5 uV units
    waveform = formats.read_waveform(path)
    assert len(waveform.signal) == len(x) and waveform.units == ["uV"] * 12
    assert "dropped 1.00 s after the ECG" in waveform.notes[0]


# ------------------------------------------------------------------ rejected records

def test_truncated_files_are_rejected_with_a_reason(tmp_path, original):
    x, names, fs, _ = original
    expected = {"edf": "truncated: EDF file ecg.edf: its header states 1 data records",
                "dicom": "truncated: DICOM file ecg.dicom: waveform data holds 73550 of the "
                         "120000 bytes",
                "philips": "unreadable: Philips XML file ecg.philips",
                "muse": "unreadable: GE MUSE XML file ecg.muse"}
    for kind, start in expected.items():
        path = format_file(kind, tmp_path, f"ecg.{kind}", x, names, fs)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) * 2 // 3])
        assert reason_of(path).startswith(start), (kind, reason_of(path))
    muse = write_muse(tmp_path / "cut.xml", columns(x, names, EIGHT_LEADS), EIGHT_LEADS, fs)
    text = muse.read_text(encoding="iso-8859-1")
    start = text.rindex("<WaveFormData>") + len("<WaveFormData>")
    end = text.index("</WaveFormData>", start)
    half = base64.b64decode(text[start:end])[:4000]  # the last lead cut short, the XML intact
    muse.write_text(text[:start] + base64.b64encode(half).decode() + text[end:],
                    encoding="iso-8859-1")
    assert reason_of(muse).startswith("truncated: GE MUSE XML cut.xml: lead V6 holds")


def test_values_of_another_unit_are_rejected_naming_it(tmp_path, original):
    x, names, fs, _ = original
    as_uv = prepare_record(tmp_path, "uv_as_mv", 1000 * x, names, fs, adc_gain=1.0)
    reason = reason_of(as_uv)
    assert reason == ("unit: amplitudes look like \u00b5V (median lead peak-to-peak 675.2 in the "
                      "file's stated mV; plausible 0.1-20 mV); if the file's unit is wrong, set "
                      "--unit=uV")
    as_v = prepare_record(tmp_path, "v_as_mv", x / 1000, names, fs, adc_gain=1e6)
    assert reason_of(as_v).startswith("unit: amplitudes look like V (median lead peak-to-peak 0.00")
    assert reason_of(as_v).endswith("set --unit=V")
    # a MUSE file that says millivolts but holds microvolts
    muse = write_muse(tmp_path / "muse.xml", 1000 * columns(x, names, EIGHT_LEADS), EIGHT_LEADS,
                      fs, per_bit=1.0, units="MILLIVOLTS")
    assert reason_of(muse).startswith("unit: amplitudes look like \u00b5V")
    # no stated unit: read as mV only if the amplitudes agree
    unitless = write_dicom(tmp_path / "unitless.dcm", x, names, fs, unit="")
    reason = reason_of(unitless)
    assert reason.startswith("unit: amplitudes look like \u00b5V")
    assert "stated unit (none)" in reason
    # a unit this code does not know is checked the same way
    mmhg = prepare_record(tmp_path, "mmhg", x, names, fs, units="mmHg")
    result = record_beats.record_beats(mmhg, OPTIONS)
    assert "unit(s) 'mmHg' not known: values read as mV" in " ".join(result.info["notes"])


def test_leads_of_another_unit_are_named_though_the_median_lead_is_right(tmp_path, original):
    x, names, fs, _ = original
    scaled = np.array(x, dtype=float)
    off = ["V1", "V2", "V3", "V4", "V5"]
    for lead in off:                       # 5 of 12 leads in uV: the median lead is still mV
        scaled[:, list(names).index(lead)] *= 1000
    path = prepare_record(tmp_path, "five_in_uv", scaled, names, fs)
    reason = reason_of(path)
    assert reason.startswith("unit: lead(s) V1, V2, V3, V4, V5 ")
    assert "look like \u00b5V" in reason and "the other leads' median" in reason
    one = np.array(x, dtype=float)
    one[:, [lead_key(n) for n in names].index(lead_key("aVL"))] /= 1000     # one lead in V
    reason = reason_of(prepare_record(tmp_path, "avl_in_v", one, names, fs, adc_gain=1e6))
    assert reason.startswith("flat lead: lead aVL peak-to-peak ")     # as a disconnected one
    assert "disconnected, or stored in a unit 1000x larger than the other leads" in reason
    weak = np.array(x, dtype=float)
    weak[:, [lead_key(n) for n in names].index(lead_key("aVL"))] *= 0.3     # small, in mV
    assert record_beats.record_beats(prepare_record(tmp_path, "avl_small", weak, names, fs),
                                     options()).beats.shape[1] == 12


def prepare_record(folder, name, x, names, fs, adc_gain=1000.0, units="mV"):
    wfdb.wrsamp(name, fs=fs, units=[units] * len(names), sig_name=list(names), p_signal=x,
                fmt=["32"] * len(names), adc_gain=[adc_gain] * len(names),
                baseline=[0] * len(names), write_dir=str(folder))
    return Path(folder) / name


def test_unit_option_rescales_every_record(tmp_path, original):
    x, names, fs, expected = original
    as_uv = prepare_record(tmp_path, "uv_as_mv", 1000 * x, names, fs, adc_gain=1.0)
    result = record_beats.record_beats(as_uv, options(unit="uV"))
    np.testing.assert_allclose(result.beats, expected.beats, atol=1e-5)
    assert any("values read as uV (--unit)" in note for note in result.info["notes"])
    reason = reason_of(ORIGINAL, options(unit="uV"))
    assert reason.startswith("unit: amplitudes look like mV") and "in --unit=uV" in reason
    muse = write_muse(tmp_path / "volts.xml", columns(x, names, EIGHT_LEADS) / 1000, EIGHT_LEADS,
                      fs, per_bit=1e-6, units="MILLIVOLTS")
    assert reason_of(muse).startswith("unit: amplitudes look like V")
    assert len(record_beats.record_beats(muse, options(unit="V")).beats) == len(expected.beats)


def test_missing_leads_and_unknown_formats_are_named(tmp_path, original):
    x, names, fs, _ = original
    eleven = write_dicom(tmp_path / "eleven.dcm", x[:, :11], names[:11], fs)
    assert reason_of(eleven).startswith("missing lead: missing lead V6 (has: Lead I (Einthoven)")
    seven = write_muse(tmp_path / "seven.xml", columns(x, names, EIGHT_LEADS[1:]),
                       EIGHT_LEADS[1:], fs)  # no lead I: nothing can be derived
    assert reason_of(seven).startswith("missing lead: missing lead I, III, aVR, aVL, aVF")
    png = tmp_path / "scan.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    reason = reason_of(png)
    assert reason.startswith("unknown format: scan.png is none of WFDB (<record>.hea), EDF")
    hl7 = tmp_path / "aecg.xml"
    hl7.write_text('<?xml version="1.0"?><AnnotatedECG xmlns="urn:hl7-org:v3"/>')
    assert reason_of(hl7).startswith("unknown format: aecg.xml: XML with root element "
                                     "<AnnotatedECG>")
    header = tmp_path / "rec.txt"
    header.write_text("rec 12 500 5000\n")
    assert reason_of(header).startswith("unknown format: rec.txt looks like a WFDB header")
    plain = write_philips(tmp_path / "plain.xml", x, fs, compression="Uncompressed")
    assert reason_of(plain).startswith("unsupported: Philips XML plain.xml: waveform compression "
                                       "'Uncompressed'; sierraecg reads XLI")


@pytest.mark.parametrize("name, lead", [
    ("Lead I (Einthoven)", "I"), ("Lead II", "II"), ("Lead aVR", "aVR"),
    ("Lead aVL (Goldberger)", "aVL"), ("Lead aVF, augmented voltage, foot", "aVF"),
    ("MDC_ECG_LEAD_AVR", "aVR"), ("MDC_ECG_LEAD_V1", "V1"), ("DI", "I"), ("DII", "II"),
    ("DIII", "III"), ("ECG I", "I"), ("EKG V1", "V1"), ("AVR", "aVR"), ("avf", "aVF"),
    ("LEADII", "II"), ("ECG Lead III", "III"), ("V6:", "V6"), ("C2", "V2"),
    ("V7", None), ("RESP", None), ("Lead", None), ("ECGI", None), ("D", None)])
def test_vendor_lead_names_map_to_the_standard_leads(name, lead):
    assert LEAD_BY_KEY.get(lead_key(name)) == lead


# ------------------------------------------------------------------ the script

def test_a_table_of_mixed_formats(monkeypatch, tmp_path, original):
    x, names, fs, expected = original
    for kind in ("edf", "dicom", "philips", "muse"):
        format_file(kind, tmp_path, f"ecg_{kind}.bin", x, names, fs)
    prepare_record(tmp_path, "uv_as_mv", 1000 * x, names, fs, adc_gain=1.0)
    (tmp_path / "notes.txt").write_text("not an ECG\n")
    table = tmp_path / "table.csv"
    table.write_text("record,patient_id,group\n"
                     f"{ORIGINAL},1,NORM\necg_edf.bin,2,NORM\necg_dicom.bin,3,MI\n"
                     "ecg_philips.bin,4,MI\necg_muse.bin,5,MI\nuv_as_mv,6,NORM\n"
                     "notes.txt,7,MI\n")
    out = tmp_path / "out"
    run_prepare_data(monkeypatch, f"--table={table}", f"--output_dir={out}", "--workers=1")
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["records_per_format"] == {"WFDB": 1, "EDF": 1, "DICOM": 1, "Philips XML": 1,
                                             "GE MUSE XML": 1}
    assert summary["records_with_derived_leads"] == 1
    assert summary["rejection_counts"] == {"unit": 1, "unknown format": 1}
    beats = np.load(out / "cut_MI.npy")
    np.testing.assert_allclose(beats[:len(expected.beats)], expected.beats, atol=1e-5)
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["source"]["input_unit"] == "each file's stated unit"

    out_uv = tmp_path / "out_uv"
    table.write_text(f"record,patient_id,group\nuv_as_mv,6,NORM\n{ORIGINAL},1,MI\n")
    run_prepare_data(monkeypatch, f"--table={table}", f"--output_dir={out_uv}", "--workers=1",
                     "--unit=uV", trainable=False)
    summary = json.loads((out_uv / "prepare_summary.json").read_text())
    assert summary["records_kept"] == 1 and summary["rejection_counts"] == {"unit": 1}
    np.testing.assert_allclose(np.load(out_uv / "cut_NORM.npy"), expected.beats, atol=1e-5)
