"""Baseline pretraining methods, each a :class:`tcl_ssl.methods.Method` built from lightly's and
pytorch-metric-learning's reference components and trained by the same loop as TCL.

- :mod:`baselines.simclr`: SimCLR (NT-Xent), self-supervised;
- :mod:`baselines.moco`: MoCo v2 (momentum encoder + queue), self-supervised;
- :mod:`baselines.moco_tcl`: the MoCo machinery with TCL as the criterion, both settings;
- :mod:`baselines.byol`: BYOL (momentum target, predictor), self-supervised;
- :mod:`baselines.mocov3`: MoCo v3 (momentum encoder, predictor, in-batch keys), self-supervised;
- :mod:`baselines.nnclr`: NNCLR (nearest neighbour from a support set as the positive), self-supervised;
- :mod:`baselines.vicreg`: VICReg (variance, invariance, covariance), self-supervised;
- :mod:`baselines.barlowtwins`: Barlow Twins (cross-correlation to identity), self-supervised;
- :mod:`baselines.dino`: DINO (momentum teacher, centring, sharpening; multi-crop), self-supervised;
- :mod:`baselines.swav`: SwAV (swapped prediction of Sinkhorn codes; multi-crop), self-supervised;
- :mod:`baselines.dcl`: DCL and DCLW (decoupled contrastive loss, unweighted and weighted), self-supervised;
- :mod:`baselines.hcl`: HCL (SimCLR with hard-negative reweighting and debiasing), self-supervised;
- :mod:`baselines.debiased`: debiased contrastive learning (SimCLR, debiased negatives), self-supervised;
- :mod:`baselines.supcon`: SupCon (pytorch-metric-learning's ``SupConLoss``), supervised;
- :mod:`baselines.ce`: cross-entropy with a linear classifier, supervised.

They are registered by name in :mod:`tcl_ssl.methods.registry` and imported only when asked for.
"""
