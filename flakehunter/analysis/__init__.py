"""Detection: the detector contract, the pipeline that runs detectors, and shared image steps."""

from flakehunter.analysis.detector import Detection, DetectionContext, Detector, StatefulDetector

__all__ = ["Detection", "DetectionContext", "Detector", "StatefulDetector"]
