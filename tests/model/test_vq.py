"""VQ tokenizer: taming-compatible structure, checkpoint loading, token round trip, training."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from healthgpt.model.image_tokens import ImageCodeConstraint, add_image_tokens, codes_to_text
from healthgpt.model.tokenizer import ByteTokenizer
from healthgpt.model.vq import (
    VQConfig,
    VQTokenizer,
    config_from_taming_yaml,
    images_to_tensor,
    tensor_to_images,
)
from healthgpt.storage import file_sha256

# The real checkpoint's structure, scaled down (same levels, blocks and attention layout).
SMALL_GUMBEL = VQConfig(
    ch=32,
    ch_mult=(1, 1, 2, 4),
    num_res_blocks=2,
    attn_resolutions=(4,),
    z_channels=32,
    resolution=32,
    n_embed=64,
    embed_dim=32,
    quantizer="gumbel",
)

# Names and shapes in taming-transformers' VQGAN OpenImages f=8 8192 Gumbel `last.ckpt`,
# written out from its module structure (Encoder/Decoder ch=128, ch_mult=[1,1,2,4],
# num_res_blocks=2, attn_resolutions=[32], z_channels=256; GumbelQuantize(256, 256, 8192)).
REAL_KEYS = {
    "encoder.conv_in.weight": (128, 3, 3, 3),
    "encoder.down.0.block.0.norm1.weight": (128,),
    "encoder.down.0.block.1.conv2.bias": (128,),
    "encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
    "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "encoder.down.3.block.0.nin_shortcut.weight": (512, 256, 1, 1),
    "encoder.down.3.attn.0.q.weight": (512, 512, 1, 1),
    "encoder.down.3.attn.1.proj_out.bias": (512,),
    "encoder.mid.block_1.conv1.weight": (512, 512, 3, 3),
    "encoder.mid.attn_1.k.weight": (512, 512, 1, 1),
    "encoder.norm_out.weight": (512,),
    "encoder.conv_out.weight": (256, 512, 3, 3),
    "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.mid.block_2.norm2.bias": (512,),
    "decoder.up.3.block.2.conv1.weight": (512, 512, 3, 3),
    "decoder.up.3.attn.2.v.weight": (512, 512, 1, 1),
    "decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    "decoder.up.2.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
    "decoder.norm_out.bias": (128,),
    "decoder.conv_out.weight": (3, 128, 3, 3),
    "quant_conv.weight": (256, 256, 1, 1),
    "post_quant_conv.bias": (256,),
    "quantize.proj.weight": (8192, 256, 1, 1),
    "quantize.proj.bias": (8192,),
    "quantize.embed.weight": (8192, 256),
}

MODEL_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 32
    n_embed: 64
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params: {warm_up_steps: 0, max_decay_steps: 1000001, lr_start: 0.9, lr_max: 0.9}
    ddconfig:
      double_z: false
      z_channels: 32
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 1, 2, 4]
      num_res_blocks: 2
      attn_resolutions: [4]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""


def test_module_names_and_shapes_match_the_real_checkpoint():
    with torch.device("meta"):
        state = VQTokenizer(VQConfig()).state_dict()
    for key, shape in REAL_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert VQConfig().grid_size == 32


def test_taming_state_dict_loads_strictly_and_losses_are_reported():
    source = VQTokenizer(SMALL_GUMBEL)
    state = {k: torch.randn_like(v) for k, v in source.state_dict().items()}
    state["loss.discriminator.main.0.weight"] = torch.zeros(1)
    state["loss.logvar"] = torch.zeros(())
    target = VQTokenizer(SMALL_GUMBEL)
    report = target.load_taming_state_dict(state)
    assert set(report.ignored) == {"loss.discriminator.main.0.weight", "loss.logvar"}
    torch.testing.assert_close(target.quantize.embed.weight, state["quantize.embed.weight"])
    # Strict: a renamed key fails loudly instead of silently leaving random weights.
    state["encoder.conv_in.weight_renamed"] = state.pop("encoder.conv_in.weight")
    with pytest.raises(RuntimeError):
        VQTokenizer(SMALL_GUMBEL).load_taming_state_dict(state)


def test_checkpoint_files_round_trip(tmp_path):
    source = VQTokenizer(SMALL_GUMBEL)
    (tmp_path / "model.yaml").write_text(MODEL_YAML)
    torch.save({"state_dict": source.state_dict(), "global_step": 1}, tmp_path / "last.ckpt")
    loaded, report = VQTokenizer.from_taming_checkpoint(
        tmp_path / "last.ckpt", tmp_path / "model.yaml"
    )
    assert loaded.config.quantizer == "gumbel" and loaded.config.ch_mult == (1, 1, 2, 4)
    assert not report.ignored and len(report.loaded) == len(source.state_dict())
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.encode(images), source.encode(images))


def test_yaml_config_parsing(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL_YAML)
    cfg = config_from_taming_yaml(path)
    assert (cfg.ch, cfg.n_embed, cfg.embed_dim, cfg.attn_resolutions) == (32, 64, 32, (4,))
    assert cfg.quantizer == "gumbel"
    path.write_text(MODEL_YAML.replace("GumbelVQ", "VQModel"))
    assert config_from_taming_yaml(path).quantizer == "nearest"


@pytest.mark.parametrize("newlines", [False, True])
def test_image_token_round_trip(newlines):
    torch.manual_seed(0)
    vq = VQTokenizer(SMALL_GUMBEL).eval()
    tokenizer = ByteTokenizer()

    class _LM(torch.nn.Module):  # just the two embedding matrices
        def __init__(self, n):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(n, 8), torch.nn.Linear(8, n, bias=False)

        def get_input_embeddings(self):
            return self.emb

        def get_output_embeddings(self):
            return self.head

        def resize_token_embeddings(self, n, mean_resizing=False):
            self.emb.weight = torch.nn.Parameter(
                torch.cat([self.emb.weight, torch.zeros(n - self.emb.num_embeddings, 8)])
            )
            self.head.weight = torch.nn.Parameter(
                torch.cat([self.head.weight, torch.zeros(n - self.head.out_features, 8)])
            )

    lm = _LM(len(tokenizer))
    before = lm.emb.weight.detach().clone()
    vocab = add_image_tokens(tokenizer, lm, vq.num_codes)
    # New rows start at the mean of the old ones.
    torch.testing.assert_close(lm.emb.weight[-1], before.mean(0))
    torch.testing.assert_close(lm.emb.weight[: len(before)], before)

    image = torch.rand(1, 3, 32, 32) * 2 - 1
    codes = vq.encode(image)[0]
    assert codes.shape == (4, 4)
    ids = vocab.codes_to_ids(codes, newlines=newlines)
    assert ids == tokenizer.encode(codes_to_text(codes, newlines=newlines))
    back = vocab.ids_to_codes(ids, grid=4)
    torch.testing.assert_close(back, codes)
    torch.testing.assert_close(vq.decode(back[None]), vq.decode(codes[None]))
    assert vq.decode(back[None]).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError):
        vocab.ids_to_codes(ids[:-3], grid=4)


def test_code_constraint_always_yields_a_full_grid():
    vq_tokens = ByteTokenizer()

    class _Stub(torch.nn.Module):
        def resize_token_embeddings(self, n, mean_resizing=False):
            self.n = n

        def get_input_embeddings(self):
            return torch.nn.Embedding(self.n, 2)

        get_output_embeddings = get_input_embeddings

    vocab = add_image_tokens(vq_tokens, _Stub(), 16)
    constraint = ImageCodeConstraint(vocab, grid=3, newlines=True)
    generated = []
    for step in range(constraint.length):
        logits = torch.randn(len(vq_tokens))
        logits[vq_tokens.eos_token_id] = 1e9  # the model would rather stop
        generated.append(int(constraint.mask_logits(logits, step).argmax()))
    assert vocab.ids_to_codes(generated, grid=3).shape == (3, 3)
    assert generated.count(vocab.newline_id) == 3


def test_small_tokenizer_trains_from_scratch():
    torch.manual_seed(0)
    cfg = replace(
        SMALL_GUMBEL,
        quantizer="nearest",
        ch_mult=(1, 2),
        attn_resolutions=(),
        num_res_blocks=1,
        resolution=16,
    )
    vq = VQTokenizer(cfg)
    # Smooth images (upsampled 4x4 noise): learnable through an 8x8 bottleneck.
    images = torch.nn.functional.interpolate(
        torch.rand(2, 3, 4, 4) * 2 - 1, size=16, mode="bilinear"
    )
    optimizer = torch.optim.Adam(vq.parameters(), lr=3e-3)
    first = vq.train_step(images, optimizer)
    assert set(first) == {"loss", "reconstruction_loss", "codebook_loss", "commitment_loss"}
    for _ in range(30):
        last = vq.train_step(images, optimizer)
    assert last["reconstruction_loss"] < 0.5 * first["reconstruction_loss"]
    assert vq.encode(images).shape == (2, 8, 8)


def test_gumbel_tokenizer_is_inference_only():
    with pytest.raises(NotImplementedError):
        VQTokenizer(SMALL_GUMBEL).loss(torch.zeros(1, 3, 32, 32))


def test_pil_conversions_round_trip(image):
    pixels = images_to_tensor(image, 16)
    assert pixels.shape == (1, 3, 16, 16) and pixels.min() >= -1 and pixels.max() <= 1
    back = tensor_to_images(pixels)[0]
    assert back.size == (16, 16)
    torch.testing.assert_close(images_to_tensor(back, 16), pixels, atol=1e-6, rtol=0)


def test_trained_tokenizer_saves_and_loads_into_a_preset(tmp_path):
    from healthgpt.model import load_model
    from healthgpt.model.presets import tiny
    from healthgpt.model.vq import load_vq, save_vq

    torch.manual_seed(0)
    config = tiny()
    trained = VQTokenizer(config.vq)
    with torch.no_grad():
        trained.quantize.embedding.weight.normal_()
    path = save_vq(trained, tmp_path / "vq" / "tokenizer.safetensors")
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(load_vq(path).encode(images), trained.encode(images))
    config.vq = replace(config.vq, ckpt_path=str(path), ckpt_sha256=file_sha256(path))
    model = load_model(config, device="cpu")
    torch.testing.assert_close(
        model.vq.quantize.embedding.weight, trained.quantize.embedding.weight
    )
