"""Names shared by the model modules and the training code that feeds them."""

from __future__ import annotations

from healthgpt.data.tasks import COMPREHENSION as COMPREHENSION
from healthgpt.data.tasks import FAMILIES
from healthgpt.data.tasks import GENERATION as GENERATION
from healthgpt.data.tasks import IMAGE_TOKEN as IMAGE_PLACEHOLDER

TASK_FAMILIES = FAMILIES  # the family names (the task -> family table is data.tasks')

# Label value ignored by the loss (prompt tokens, image positions, padding).
IGNORE_INDEX = -100
# input_ids value at every position that receives one projected image patch.
IMAGE_TOKEN_ID = -200
# Placeholder in conversation text where the image goes: IMAGE_PLACEHOLDER (data.tasks').
__all__ = ["COMPREHENSION", "GENERATION", "IGNORE_INDEX", "IMAGE_PLACEHOLDER", "IMAGE_TOKEN_ID"]
