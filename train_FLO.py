"""GSMFlow on FLO with the authors' settings: MM'21's, or with --variant=tmm the TMM
paper's (the TMM block). Edit the values here; override any with --key=value."""
from config import Config
from train import main

config = Config(
    dataset="FLO",             # data/FLO/data.mat + label.mat (E-PGN, as the authors ran it)
                               # or res101.mat + att_splits.mat (CVPR'18 release, xlsa17 layout)
    class_embedding="att",     # FLO's "att" is the 1024-d sentence embedding
    anchors="seen",
    gen_nepoch=300,            # 21 iterations each -> 6,300 iterations
    batchsize=256,
    num_coupling_layers=5,
    lr=3e-4,
    weight_decay=1e-4,
    lr_gamma=0.8,
    pi=0.07,
    prototype=3.0,
    nSample=3000,
    eval_start=2000,
    evl_interval=500,
    classifier_lr=5e-3,
    classifier_epochs=30,
    classifier_batch=1000,
    manualSeed=6152,
)

# GSMFlow-TMM (IEEE TMM), used with --variant=tmm (docs/tmm.md): the values of the authors'
# scripts/FLO.sh in uqzhichen/GSMFlow_TMM (GZSL line), applied over the block above.
TMM = dict(
    anchors="all",             # TMM: anchors from all classes' vectors
    relation_nepoch=60,        # relation network: 21 x 60 + 1 = 1,261 iterations (of 64 rows)
    relation_batchsize=64,     # quirk: also the flow's batch: the flow trains on batches of 64
    relation_lr=3e-4,
    relation_wd=1e-6,
    aug_lr=20.0,               # mining: SGD lr on the features
    aug_wd=0.0,
    aug_mt=0.0,
    loops_adv=20,              # mining: SGD steps per batch
    entropy_weight=1.0,
    mse_weight=1.0,            # quirk: passed by their script, unused by their code
    gen_nepoch=1000,           # counted at batchsize 256: 21 iterations each -> 21,000 iterations (of 64 rows)
    batchsize=256,             # only counts iterations (and StepLR's 22-iteration epochs) under TMM
    num_coupling_layers=3,
    lr=1e-4,
    weight_decay=1e-4,
    lr_gamma=0.8,
    lr_step=30,                # their --step_size
    pi=0.1,
    prototype=3.0,
    nSample=3000,
    eval_start=2000,
    evl_interval=300,
    classifier_lr=5e-3,
    classifier_epochs=30,
    classifier_batch=1000,
    manualSeed=6289,           # their ZSL (T1) line: --manualSeed=3982
)

if __name__ == "__main__":
    main(config, tmm=TMM)
