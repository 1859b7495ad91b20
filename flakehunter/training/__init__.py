"""The training toolkit: datasets, label-respecting augmentation, training, SimCLR, evaluation, data.

Module map (one concept each):

* `angles`         angles modulo a crystal period; how the dihedral group acts on them
* `images`         reading any image into a float (H, W, 3) array in [0, 1]
* `datasets`       the dataset formats (class folders, CSV, axis CSV, label images, simulator datasets)
* `torchdata`      samples -> standardised tensors, augmentation keyed by (seed, epoch, draw)
* `augment`        dihedral transforms, crops, exposure/white-balance jitter, noise, blur
* `sampling`       epoch samplers, class balancing (weighted sampling, oversampling)
* `recipe`         YAML recipes, ``@file`` argument files and command-line overrides
* `schedule`       AdamW learning-rate schedules (1cycle, step decay, constant) with warm-up
* `checkpoint`     atomic checkpoints; RNG state for exact resumes
* `trainer`        the supervised loop (AMP on GPU, clipping, early stopping, resume)
* `simclr`         NT-Xent self-supervised pretraining
* `metrics`, `plots`, `evaluate`   numbers, PNGs and the ``evaluate-model`` report
* `predict`        a trained checkpoint on images in memory (what detector plugins call)
* `logs`           CSV logs always, TensorBoard when installed
* `microstructure` Voronoi coarse/fine grain images; `simdata` labelled crops from the chip simulator
"""
