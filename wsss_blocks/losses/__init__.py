"""Losses of CoSA: classification (Eq. 1), RAW CAM2Seg (Eq. 5), Seg2CAM (Eq. 8), CSC (Eqs. 9-10)."""

from .classification import classification_loss
from .contrastive import contrastive_separation_loss
from .raw import raw_cam2seg_loss
from .seg2cam import seg2cam_loss

__all__ = ["classification_loss", "contrastive_separation_loss", "raw_cam2seg_loss", "seg2cam_loss"]
