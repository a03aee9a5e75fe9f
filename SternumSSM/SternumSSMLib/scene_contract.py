"""The scene contract: the node attribute and reference names through which the two modules and the export
pass a prediction along in one MRML scene.

An attribute is a string on a node (``node.GetAttribute(name)``); a reference points from one node to
another (``node.GetNodeReference(name)``). The names are saved with the scene, so a saved scene from an
earlier version still reads: never change a value, only add names.
"""

# On a segmentation the SternumSSM module predicted (set by prediction_nodes.show_prediction).
SEGMENTATION_RECORD_ATTRIBUTE = "SternumSSM.PredictionRecord"  # JSON: the prediction record
UNEDITED_PREDICTION_ATTRIBUTE = "SternumSSM.PredictionSegmentationID"  # id of the hidden, unedited prediction
SOURCE_VOLUME_REFERENCE = "SternumSSM.SourceVolume"  # segmentation -> the CT it was predicted from
UNCERTAINTY_REFERENCE = "SternumSSM.Uncertainty"  # CT -> its uncertainty map
# On a CT read from a file outside Slicer's readers (the Worklist's Next case): JSON source record (kind, format,
# content hash; never names or paths), which the export records instead of "scene".
SOURCE_RECORD_ATTRIBUTE = "SternumSSM.SourceRecord"

# What a caller may set instead of the record, for the export to read (see export.prediction_from_scene).
PREDICTION_FILE = "SternumSSM.PredictionFile"  # the prediction on disk (.seg.nrrd or label map)
PREDICTION_MARKUPS_ID = "SternumSSM.PredictionMarkupsID"  # on the landmarks node: the predicted points
MODEL_FOLDER = "SternumSSM.ModelFolder"
MODEL_SHA256 = "SternumSSM.ModelSHA256"
PRESET = "SternumSSM.Preset"
PREDICTED_AT = "SternumSSM.PredictedAt"  # ISO 8601, UTC
POSTPROCESSING = "SternumSSM.Postprocessing"  # JSON list of steps
QA_FLAGS = "SternumSSM.QAFlags"  # JSON list of flags

# On a landmarks point list the SternumLandmarks module placed.
LANDMARK_RECORD_ATTRIBUTE = "SternumLandmarks.PredictionRecord"  # JSON: the landmark prediction record
CONFIDENCE_ATTRIBUTE = "SternumLandmarks.Confidence"  # JSON {landmark id: confidence}
SOURCE_SEGMENTATION_REFERENCE = "SternumLandmarks.SourceSegmentation"  # landmarks -> their segmentation
PSEUDO_REFERENCE = "SternumLandmarks.PseudoLandmarks"  # landmarks -> their pseudo-landmarks node
PSEUDO_ATTRIBUTE = "SternumLandmarks.PseudoLandmarks"  # "true" on the pseudo-landmarks node itself
