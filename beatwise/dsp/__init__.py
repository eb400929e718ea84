"""Causal streaming DSP: the bandpass filter, the online detector, the beat assembler."""
