#!/usr/bin/env bash
# README command (1): the practical end to end on the built-in toy dataset, on the CPU.
# Each step is a command from tutorial/README.md; tutorial/practical.ipynb is made of the same steps
# (scripts/notebook.py). DATA=/some/dir changes where the data goes, GPU=0 runs on the first GPU,
# EPOCHS=3 trains for a shorter time.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
DATA="${DATA:-data}"
GPU="${GPU:--1}"
step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

# Tutorial Part 1.1. Make a small dataset laid out and named exactly like Market-1501 (no download).
step "1a. make the toy Market-1501" python toy_data.py --out "$DATA" --dataset market --seed 0
# Sort its pictures into one folder per person. 10 training people are held out as val_query and val_gallery,
# so that train.py can rank people it never trained on after every epoch.
step "1b. arrange it for training" python prepare.py --download_path "$DATA/Market" --val_ids 10 --seed 0
# A second toy dataset, laid out like DukeMTMC-reID, to test the model on people from other cameras.
step "1c. make the toy DukeMTMC-reID" python toy_data.py --out "$DATA" --dataset duke --seed 0
# The same arrangement for the second dataset.
step "1d. arrange it too" python prepare_Duke.py --download_path "$DATA/DukeMTMC-reID"

# Tutorial Part 1.3. Train a small network from random weights (no download) for EPOCHS epochs (15 unless set).
# If the run already exists, --resume continues it, or does nothing when it has finished.
TRAIN=(python train.py --gpu_ids "$GPU" --name toy_mobilenet --data_dir "$DATA/Market/pytorch"
       --backbone mobilenet_v3 --no_pretrained --batchsize 32 --lr 0.01 --warm_epoch 3 --total_epoch "${EPOCHS:-15}" --seed 0)
if [ -f model/toy_mobilenet/opts.yaml ]; then TRAIN+=(--resume); fi
step "3. train" "${TRAIN[@]}"

# Tutorial Part 2. Compute a feature for every query and gallery picture, then score the ranking (Rank@k, mAP).
step "4. extract features and evaluate" python test.py --gpu_ids "$GPU" --name toy_mobilenet \
    --test_dir "$DATA/Market/pytorch" --which_epoch last --batchsize 64 --multi
# Score the same features again: another way to count AP, re-ranking, then every convention side by side.
step "5a. evaluate again, torchreid's AP convention" python evaluate_gpu.py --gpu_ids "$GPU" --ap standard
step "5b. evaluate with k-reciprocal re-ranking" python evaluate_gpu.py --gpu_ids "$GPU" --rerank
step "5c. the same features under every convention" python evaluate_gpu.py --gpu_ids "$GPU" --protocols
# The Market-trained model on the other dataset's people and cameras.
step "5d. the Market model on DukeMTMC-reID (cross-dataset)" python test.py --gpu_ids "$GPU" --name toy_mobilenet \
    --test_dir "$DATA/DukeMTMC-reID/pytorch" --output duke_result.mat

# Tutorial Part 3. Look at one query's ranking (show.png), then at where the model fails (report/index.html).
step "6a. one query's ranking" python demo.py --query_index 13 --test_dir "$DATA/Market/pytorch" --out show.png
step "6b. the error-analysis report" python demo.py --report --test_dir "$DATA/Market/pytorch" --out report
# A decision, not only a ranking: is this person in the gallery at all? demo.py answers with the threshold
# that train.py chose on the held-out people (search.png).
step "6c. is this test person in the gallery?" python demo.py --gpu_ids "$GPU" --name toy_mobilenet --topk 5 \
    --gallery_dir "$DATA/Market/pytorch/gallery" --query_image "$(ls "$DATA"/Market/pytorch/query/*/*.jpg | head -1)"
# The same question for a held-out person, who is never in the gallery (search_unseen.png).
step "6d. and this held-out person (never in the gallery)?" python demo.py --gpu_ids "$GPU" --name toy_mobilenet \
    --topk 5 --gallery_dir "$DATA/Market/pytorch/gallery" --out search_unseen.png \
    --query_image "$(ls "$DATA"/Market/pytorch/val_query/*/*.jpg | head -1)"
printf '\nopen show.png, search.png, search_unseen.png and report/index.html to look at the results\n'
