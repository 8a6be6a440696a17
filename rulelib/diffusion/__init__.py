"""The diffusion model: noise schedule, U-Nets, the trainer and the samplers.

schedule   the linear-beta schedule, forward process q(x_t | x_0), epsilon-prediction loss
unet       the paper's 23 M U-Net and the small diffusers UNet2DModel
config     TrainConfig: everything that determines a training run
train      the trainer (resumable, atomic checkpoints, EMA)
levers     its speed levers (bf16, channels_last, compiled regions), timed per machine
sample     DDPM ancestral and DDIM sampling, seeded per image, chunked and resumable
"""
