"""Stable Diffusion 1.5's fixed numbers, in one place: X-Dyna's VAE, UNet layout and latents are SD1.5's.

A model file may carry its own VAE config (tiny test sets do); these are the values of the released
SD1.5 VAE, the defaults every other module refers to.
"""

#: Latents are the VAE's posterior times this (SD1.5 VAE's ``scaling_factor``); decode divides by it.
VAE_SCALING_FACTOR = 0.18215
#: Pixels per latent cell in each direction (the VAE halves the size three times).
VAE_DOWNSCALE = 8
#: Channels of a latent.
LATENT_CHANNELS = 4
