"""Names shared by the model modules and the training code that feeds them."""

from __future__ import annotations

COMPREHENSION = "comprehension"
GENERATION = "generation"
TASK_FAMILIES = (COMPREHENSION, GENERATION)

# Label value ignored by the loss (prompt tokens, image positions, padding).
IGNORE_INDEX = -100
# input_ids value at every position that receives one projected image patch.
IMAGE_TOKEN_ID = -200
# Placeholder in conversation text where the image goes.
IMAGE_PLACEHOLDER = "<image>"
