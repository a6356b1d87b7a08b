"""Names shared by every part of the pipeline: the 12 standard leads and the waves of a beat."""
import re

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Segments of one beat, in time order, as the delineation cuts it (PR: P offset to QRS onset,
# ST: QRS offset to T onset). Samples outside P onset..T offset belong to none of them.
WAVES = ("P", "PR", "QRS", "ST", "T")
# Wave boundaries the delineation finds, in time order; WAVES[i] runs from BOUNDARIES[i] to [i+1].
BOUNDARIES = ("P_on", "P_off", "QRS_on", "QRS_off", "T_on", "T_off")


def lead_key(name):
    """A lead name reduced for matching: case, spaces and a 'lead' prefix do not matter."""
    return re.sub(r"^LEAD[\s_\-]*", "", str(name).strip().upper())


# a vendor's or a user's spelling of a lead ("avr", "Lead II") -> its standard name
LEAD_BY_KEY = {lead_key(name): name for name in LEAD_NAMES}
