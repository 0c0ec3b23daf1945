"""GSMFlow on CUB with the authors' settings: MM'21's, or with --variant=tmm the TMM
paper's (the TMM block). Edit the values here; override any with --key=value."""
from config import Config
from train import main

config = Config(
    dataset="CUB",             # data/CUB/data.mat + label.mat (E-PGN, as the authors ran it)
                               # or res101.mat + sent_splits.mat (xlsa17)
    class_embedding="sent",    # 1024-d sentence vectors; "att" = the 312-d attributes (xlsa17 layout only)
    anchors="seen",
    gen_nepoch=600,            # 27 iterations each -> 16,200 iterations
    batchsize=256,
    num_coupling_layers=5,
    lr=3e-4,
    weight_decay=1e-5,
    lr_gamma=0.8,
    pi=0.05,
    prototype=1.0,
    nSample=600,
    eval_start=2000,
    evl_interval=500,
    classifier_lr=1e-2,
    classifier_epochs=30,
    classifier_batch=3000,
    manualSeed=6152,
)

# GSMFlow-TMM (IEEE TMM), used with --variant=tmm (docs/tmm.md): the values of the authors'
# scripts/CUB.sh in uqzhichen/GSMFlow_TMM (GZSL line), applied over the block above.
TMM = dict(
    anchors="all",             # TMM: anchors from all classes' vectors
    relation_nepoch=100,       # relation network: 27 x 100 + 1 = 2,701 iterations
    relation_batchsize=256,    # (quirk: also the flow's batch)
    relation_lr=1e-4,
    relation_wd=1e-6,
    aug_lr=20.0,               # mining: SGD lr on the features
    aug_wd=0.0,
    aug_mt=0.0,
    loops_adv=20,              # mining: SGD steps per batch
    entropy_weight=10.0,
    mse_weight=1.0,            # quirk: passed by their script, unused by their code
    gen_nepoch=1500,           # 27 iterations each -> 40,500 iterations
    batchsize=256,
    num_coupling_layers=3,
    lr=1e-4,
    weight_decay=3e-5,
    lr_gamma=0.8,
    lr_step=25,                # their --step_size
    pi=0.05,
    prototype=1.0,
    nSample=600,
    eval_start=10000,
    evl_interval=300,
    classifier_lr=3e-3,
    classifier_epochs=50,
    classifier_batch=600,
    manualSeed=6167,           # their ZSL (T1) line: --manualSeed=8264
)

if __name__ == "__main__":
    main(config, tmm=TMM)
