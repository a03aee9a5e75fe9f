"""A phantom cropped to the sternum and the cartilage's anterior half: keeps each prediction to a few tiles."""

from __future__ import annotations

import numpy as np
from SternumSSMLib.geometry import Volume
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.roi import Box, crop, index_slices

STERNUM_BOX = Box(np.array([-130.0, -160.0, -230.0]), np.array([130.0, -40.0, 50.0]))


def cropped_case(params: PhantomParameters) -> tuple[Volume, Volume]:
    """The phantom's CT and labels inside :data:`STERNUM_BOX`."""
    phantom = generate_phantom(params)
    slices = index_slices(phantom.image.geometry, STERNUM_BOX)
    return crop(phantom.image, slices), crop(phantom.labels, slices)
