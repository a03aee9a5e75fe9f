"""Qt-free logic of the SternumLandmarks module."""
