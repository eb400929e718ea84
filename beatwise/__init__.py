"""BeatWise: real-time ECG arrhythmia monitoring.

The one beat pipeline (causal filter -> online Pan-Tompkins -> beat assembler) lives in
:mod:`beatwise.pipeline` and is shared by the dataset builder, the evaluator and the live
consumer.
"""

__version__ = "0.1.0"
