"""Qt-free logic of the SternumSSM extension: anatomy, geometry, phantoms, MRML glue."""
