"""The variational RNN baseline (VRNN; Chung et al. 2015, arXiv 1506.02216).

The "standard variational Bayes RNN" PV-RNN is compared against (Ahmadi & Tani 2019,
arXiv 1811.01339): unlike PV-RNN it has an encoder ``q(z_t | x_t, h_{t-1})`` and reads the
observations as inputs, so online prediction is plain filtering, no optimisation::

    prior    p(z_t | h_{t-1})          = N(mu_0, sigma_0^2)
    encoder  q(z_t | x_t, h_{t-1})     = N(mu_z, sigma_z^2)
    decoder  x_hat_t = f(phi_z(z_t), h_{t-1})
    update   h_t = GRU([phi_x(x_t), phi_z(z_t)], h_{t-1})

It is trained on the same weighted objective as PV-RNN (squared error averaged over output
dimensions + ``w`` times the KL averaged over latent dimensions), so that a meta-prior
value means the same for both; ``w = 1`` is the ordinary (unit-variance Gaussian) VRNN up to
the per-dimension averaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bayesnets.pvrnn.model import (
    LEARNING_RATE,
    NUM_STEPS,
    _FullBatchTrainer,
    check_sequences,
    gaussian_kl,
    reconstruction_error,
)
from inference.checks import renamed_kwargs
from inference.training.fit import Fit

__all__ = ["VRNN", "VRNNFit", "VRNNTrainer", "train_vrnn"]


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.Tanh(), nn.Linear(n_hidden, n_out))


class VRNN(nn.Module):
    """Variational RNN (Chung et al. 2015, arXiv 1506.02216).

    Args:
        output_dim: observation dimension ``X``.
        hidden_size: GRU units ``H``.
        latent_size: ``Z``.
        feature_size: width of the feature extractors and of the encoder/decoder/prior hidden layers.
        kl_weight: ``w`` on the KL term.
    """

    def __init__(self, output_dim: int, hidden_size: int = 32, latent_size: int = 2, feature_size: int = 16,
                 kl_weight: float = 1.0) -> None:
        super().__init__()
        for name, v in (("output_dim", output_dim), ("hidden_size", hidden_size), ("latent_size", latent_size),
                        ("feature_size", feature_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be non-negative, got {kl_weight!r}")
        self.output_dim, self.hidden_size, self.latent_size = output_dim, hidden_size, latent_size
        self.kl_weight = float(kl_weight)
        f = feature_size
        self.phi_x = nn.Sequential(nn.Linear(output_dim, f), nn.Tanh())
        self.phi_z = nn.Sequential(nn.Linear(latent_size, f), nn.Tanh())
        self.prior = _mlp(hidden_size, f, 2 * latent_size)
        self.encoder = _mlp(f + hidden_size, f, 2 * latent_size)
        self.decoder = _mlp(f + hidden_size, f, output_dim)
        self.cell = nn.GRUCell(2 * f, hidden_size)

    def _gaussian(self, net: nn.Module, inp: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_sigma = net(inp).split(self.latent_size, -1)
        return mu, log_sigma

    def filter(self, observations: Tensor, sample: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Run the encoder over the observations.

        Args:
            observations: ``[B, T, X]``.
            sample: reparameterised posterior samples (False: posterior means).

        Returns:
            ``(x_hat [B, T, X], kl [B, T] (averaged over latent dims), h [B, T + 1, H])`` where
            ``h[:, t]`` is the state after ``t`` observations.
        """
        x = check_sequences(observations, self.output_dim)
        b, num_steps, _ = x.shape
        feats = self.phi_x(x)
        h = x.new_zeros(b, self.hidden_size)
        hs, mus, log_sigmas, fzs = [h], [], [], []
        # Only the encoder, the sample and the GRU need the running state; the prior, the decoder
        # and the KL read h_{t-1} and z_t, so they run batched over time after the loop.
        for t in range(num_steps):
            mu_q, ls_q = self._gaussian(self.encoder, torch.cat([feats[:, t], h], -1))
            z = mu_q + torch.exp(ls_q) * torch.randn_like(ls_q) if sample else mu_q
            fz = self.phi_z(z)
            h = self.cell(torch.cat([feats[:, t], fz], -1), h)
            hs.append(h)
            mus.append(mu_q)
            log_sigmas.append(ls_q)
            fzs.append(fz)
        h_all = torch.stack(hs, 1)  # [B, T + 1, H]
        h_prev = h_all[:, :-1]
        mu_p, ls_p = self._gaussian(self.prior, h_prev)
        kl = gaussian_kl(torch.stack(mus, 1), torch.stack(log_sigmas, 1), mu_p, ls_p).mean(-1)
        x_hat = self.decoder(torch.cat([torch.stack(fzs, 1), h_prev], -1))
        return x_hat, kl, h_all

    def negative_lower_bound(self, observations: Tensor) -> Tensor:
        """Weighted negative lower bound of each sequence, summed over time ``[B]``."""
        x_hat, kl, _ = self.filter(observations)
        return reconstruction_error(observations, x_hat).sum(1) + self.kl_weight * kl.sum(1)

    def generate_from(self, h: Tensor, horizon: int, sample: bool = True) -> Tensor:
        """Run ``horizon`` steps from states ``h [N, H]`` with ``z`` from the prior, feeding predictions back.

        Returns:
            ``[N, horizon, X]``.
        """
        outs = []
        for _ in range(horizon):
            mu_p, ls_p = self._gaussian(self.prior, h)
            z = mu_p + torch.exp(ls_p) * torch.randn_like(ls_p) if sample else mu_p
            fz = self.phi_z(z)
            x_hat = self.decoder(torch.cat([fz, h], -1))
            outs.append(x_hat)
            h = self.cell(torch.cat([self.phi_x(x_hat), fz], -1), h)
        return torch.stack(outs, 1)

    @torch.no_grad()
    def predict_online(self, observations: Tensor, horizon: int = 1, sample: bool = True) -> Tensor:
        """Online prediction: after each observation, predict the next ``horizon`` steps.

        Filtering uses the posterior mean; the future samples the prior (as PV-RNN's error regression does).

        Returns:
            ``[B, T, horizon, X]``, ``[:, t, k]`` predicting ``x_{t+1+k}``.
        """
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        _, _, hs = self.filter(observations, sample=False)
        b, num_steps = hs.shape[0], hs.shape[1] - 1
        h = hs[:, 1:].reshape(b * num_steps, self.hidden_size)
        return self.generate_from(h, horizon, sample).reshape(b, num_steps, horizon, self.output_dim)


@dataclass
class VRNNFit(Fit):
    """Result of :class:`VRNNTrainer` and :func:`train_vrnn`: the fitted :class:`VRNN` and
    ``history["loss"]`` ``[num_steps]``, at every training step the weighted negative lower bound
    averaged over sequences and time steps."""


class VRNNTrainer(_FullBatchTrainer):
    """Fit a :class:`VRNN` (Chung et al. 2015, arXiv 1506.02216) by full-batch steps on its weighted
    negative lower bound, averaged over sequences and steps: the PV-RNN baseline, trained as
    :class:`~bayesnets.pvrnn.model.PVRNNTrainer` trains PV-RNN (default Adam, lr 1e-3).

    Args:
        num_steps: full-batch steps (epochs).
        Other arguments as for :class:`~inference.training.trainer.Trainer`.

    Example:
        >>> fit = VRNNTrainer(num_steps=600, lr=1e-2, seed=0).fit(VRNN(2), x_train)   # x_train [N, T, 2]
    """

    def fit(self, model: VRNN, sequences: Tensor, progress: bool = True) -> VRNNFit:
        """Train ``model`` in place on ``sequences`` ``[N, T, X]``; returns a :class:`VRNNFit`."""
        return self._fit(model, sequences, progress, reseed=True)

    def _fit(self, model: VRNN, sequences: Tensor, progress: bool, reseed: bool) -> VRNNFit:
        if not isinstance(model, VRNN):
            raise TypeError(f"model must be a VRNN, got {type(model).__name__}")
        x = check_sequences(sequences, model.output_dim, "sequences")

        def loss() -> Tensor:
            return model.negative_lower_bound(x).mean() / x.shape[1]

        history, attrs = self._run(model, model, loss, None, reseed, progress, "VRNN")
        return VRNNFit(model, history, attrs)


@renamed_kwargs(num_epochs="num_steps")
def train_vrnn(model: VRNN, sequences: Tensor, num_steps: int = NUM_STEPS, lr: float = LEARNING_RATE,
               weight_decay: float = 0.0, progress: bool = True, seed: int | None = None) -> VRNNFit:
    """Fit a :class:`VRNN` by full-batch Adam on its weighted negative lower bound (in place):
    :class:`VRNNTrainer` in one call.

    Args:
        model: the VRNN.
        sequences: ``[N, T, X]``.
        num_steps: Adam steps (``num_epochs`` before).
        lr, weight_decay: Adam's.
        progress: tqdm bar.
        seed: as :func:`~bayesnets.pvrnn.model.train_pvrnn`'s: ``None`` (the default) trains on
            torch's global stream as it stands, as this function always has.

    Returns:
        a :class:`VRNNFit`.
    """
    trainer = VRNNTrainer(num_steps, lr=lr, weight_decay=weight_decay, seed=seed)
    return trainer._fit(model, sequences, progress, reseed=seed is not None)
