"""Names shared by every part of the pipeline: the 12 standard leads and the waves of a beat."""

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Segments of one beat, in time order, as the delineation cuts it (PR: P offset to QRS onset,
# ST: QRS offset to T onset). Samples outside P onset..T offset belong to none of them.
WAVES = ("P", "PR", "QRS", "ST", "T")
# Wave boundaries the delineation finds, in time order; WAVES[i] runs from BOUNDARIES[i] to [i+1].
BOUNDARIES = ("P_on", "P_off", "QRS_on", "QRS_off", "T_on", "T_off")
