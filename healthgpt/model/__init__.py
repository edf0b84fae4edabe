"""HealthGPT model: H-LoRA plugins, hierarchical visual perception, VQ image tokens.

Entry points for the training and evaluation code::

    model = load_model("tiny" | "smollm2" | "m3" | "l14" | ModelConfig, device=...)
    model = load_model(with_random_weights(get_preset("m3")))   # real shapes, no files
    sample = model.format_conversation(conversations)          # input_ids, labels
    batch = model.collate([sample | {"task_family": ..., "pixel_values": ...}, ...])
    model(batch).loss.backward()
    save_trainable(model, path); load_trainable(model, path)
"""

from healthgpt.model.constants import (
    COMPREHENSION,
    GENERATION,
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN_ID,
    TASK_FAMILIES,
)
from healthgpt.model.healthgpt import HealthGPT, HealthGPTOutput
from healthgpt.model.hlora import HLoRAConfig, active_plugin, route, set_active_plugin
from healthgpt.model.image_tokens import codes_to_text
from healthgpt.model.loading import load_model
from healthgpt.model.presets import PRESETS, ModelConfig, get_preset, with_random_weights
from healthgpt.model.prompt import ConversationFormatter, collate
from healthgpt.model.vq import (
    VQConfig,
    VQTokenizer,
    images_to_tensor,
    load_vq,
    save_vq,
    tensor_to_images,
)
from healthgpt.model.weights import (
    IncompleteWeights,
    LoadReport,
    SavedCheckpoint,
    load_official_release,
    load_official_weights,
    load_trainable,
    save_trainable,
    trainable_state_dict,
)

__all__ = [
    "COMPREHENSION",
    "GENERATION",
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "IMAGE_TOKEN_ID",
    "PRESETS",
    "TASK_FAMILIES",
    "ConversationFormatter",
    "HLoRAConfig",
    "HealthGPT",
    "HealthGPTOutput",
    "IncompleteWeights",
    "LoadReport",
    "ModelConfig",
    "SavedCheckpoint",
    "VQConfig",
    "VQTokenizer",
    "active_plugin",
    "codes_to_text",
    "collate",
    "get_preset",
    "images_to_tensor",
    "load_model",
    "load_official_release",
    "load_official_weights",
    "load_trainable",
    "load_vq",
    "route",
    "save_trainable",
    "save_vq",
    "set_active_plugin",
    "tensor_to_images",
    "trainable_state_dict",
    "with_random_weights",
]
