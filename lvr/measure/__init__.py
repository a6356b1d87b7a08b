"""ECG measurements: wave boundaries of a beat (delineation) and the amplitudes and intervals a
cardiologist reads off it (the measurement baseline's features).

Imports the foundation only.
"""
