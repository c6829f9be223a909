"""The library the stage scripts share, one concern per module.

    datasets     the benchmarks' file-name rules, junk/distractor ids and dataset table
    images       which files are pictures, transforms, folder loading and checks
    files        atomic writes; YAML, JSON and CSV
    runs         the run folder model/NAME/: names, checkpoint names, saved weights
    checkpoints  the training state saved every epoch and restored by --resume
    features     pytorch_result.mat: the one writer/reader pair
    extraction   test-time features (flip and scale averaged, L2-normalised)
    metrics      the evaluation protocol: Rank@k, mAP, mINP
    re_ranking   k-reciprocal re-ranking
    pretrained   ImageNet weights (fetch, cache, offline errors) and IBN-Net
    losses       the metric-learning losses
    recipes      the P x K sampler, weight averaging, the BoT preset and their flags
    distributed  several processes (torchrun, --gpu_ids 0,1): ranks, batch slices, the process group
    acceleration train.py's speed flags; torch.compile and its fallback
    pipeline     the decoded-once input pipeline: a uint8 cache, batched augmentation on the device
    sources      reading a release: its folders and list files, parsed by the dataset table
    own_folder   an instructor's own ROOT/<identity>/<picture>: cameras, the split by identity
    audit        what can be wrong with a prepared dataset (audit.py prints it)
    onnx_export  the test-time ONNX graph, its parity gate, ONNX Runtime extraction
    toy_layout   where toy_data.py puts each picture of each release
    pictures     ranking strips, training curves, report plots
    report       the HTML error-analysis report
    toy_render   how each toy picture is drawn

Nothing here imports a stage script; the scripts import these modules.
"""
