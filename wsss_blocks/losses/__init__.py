"""Losses of CoSA: classification (Eq. 1), RAW CAM2Seg (Eq. 5), Seg2CAM (Eq. 8), CSC (Eqs. 9-10),
the official release's dense energy regulariser, and AuxSegNet's saliency loss."""

from .classification import classification_loss
from .contrastive import contrastive_separation_loss
from .energy import dense_energy_loss, energy_gate
from .raw import raw_cam2seg_loss
from .saliency import saliency_loss
from .seg2cam import seg2cam_loss

__all__ = [
    "classification_loss",
    "contrastive_separation_loss",
    "dense_energy_loss",
    "energy_gate",
    "raw_cam2seg_loss",
    "saliency_loss",
    "seg2cam_loss",
]
