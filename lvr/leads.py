"""Names shared by every part of the pipeline: the 12 standard leads and the waves of a beat."""
import re

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Segments of one beat, in time order, as the delineation cuts it (PR: P offset to QRS onset,
# ST: QRS offset to T onset). Samples outside P onset..T offset belong to none of them.
WAVES = ("P", "PR", "QRS", "ST", "T")
# How far a beat's window must reach before and after the R peak (ms) for the delineation: a P
# wave starts up to 200 ms before R, and the T wave ends about 400 ms after R at normal heart
# rates (lvr.measure.delineation.FALLBACK_MS: P onset -200 ms, T offset +420 ms).
DELINEATION_WINDOW_MS = (200, 400)
# Wave boundaries the delineation finds, in time order; WAVES[i] runs from BOUNDARIES[i] to [i+1].
BOUNDARIES = ("P_on", "P_off", "QRS_on", "QRS_off", "T_on", "T_off")
# Leads that Einthoven's and Goldberger's laws give from I and II; files that store 8 leads
# (GE MUSE: I, II, V1-V6) leave them out.
LIMB_LEADS_FROM_I_AND_II = ("III", "aVR", "aVL", "aVF")

# Words vendors put before a lead's name: "Lead II", "LEADII", "ECG I", "EKG V1",
# "MDC_ECG_LEAD_AVR" (HL7 aECG, Philips); applied until none is left ("ECG Lead II").
LEAD_PREFIX = re.compile(r"^(LEAD|(MDC ECG LEAD|MDC ECG|ECG|EKG)(?![A-Z0-9]))\s*")
# Vendor names of standard leads once the prefix is gone: Italian/Spanish DI-DIII (Mortara,
# Esaote) and the European C1-C6 for the chest leads (Schiller).
LEAD_ALIASES = {"DI": "I", "DII": "II", "DIII": "III",
                **{f"C{i}": f"V{i}" for i in range(1, 7)}}


def lead_key(name):
    """A lead name reduced for matching: case, spaces, '_', '-', ':', a vendor prefix and the
    explanations in DICOM CID 3001 code meanings ("Lead I (Einthoven)", "Lead aVR, augmented
    voltage, right arm") do not matter."""
    text = re.sub(r"\(.*?\)", " ", str(name).upper()).split(",")[0]
    text = re.sub(r"[\s_\-:]+", " ", text).strip()
    previous = None
    while text != previous:
        previous = text
        text = LEAD_PREFIX.sub("", text)
    return text.replace(" ", "")


# a vendor's or a user's spelling of a lead ("avr", "Lead II", "DIII") -> its standard name
LEAD_BY_KEY = {**{lead_key(alias): lead for alias, lead in LEAD_ALIASES.items()},
               **{lead_key(name): name for name in LEAD_NAMES}}
