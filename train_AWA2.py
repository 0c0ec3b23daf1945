"""GSMFlow on AWA2 with the authors' settings: MM'21's, or with --variant=tmm the TMM
paper's (the TMM block). Edit the values here; override any with --key=value."""
from config import Config
from train import main

config = Config(
    dataset="AWA2",            # data/AWA2/res101.mat + att_splits.mat (xlsa17)
    class_embedding="att",     # 85-d attributes
    anchors="seen",            # relative-positioning anchors from the seen classes' vectors
    gen_nepoch=500,            # flow epochs: 91 iterations each -> 45,500 iterations
    batchsize=256,
    num_coupling_layers=3,
    lr=3e-4,
    weight_decay=3e-6,
    lr_gamma=0.92,             # StepLR, every 15 epochs
    pi=0.15,                   # visual perturbation scale
    prototype=10.0,            # prototype loss weight
    nSample=50000,             # synthetic features per unseen class
    eval_start=30000,
    evl_interval=500,
    classifier_lr=1e-3,
    classifier_epochs=30,
    classifier_batch=1200,
    manualSeed=6152,
)

# GSMFlow-TMM (IEEE TMM), used with --variant=tmm (docs/tmm.md): the values of the authors'
# scripts/AWA.sh in uqzhichen/GSMFlow_TMM (GZSL line), applied over the block above.
TMM = dict(
    anchors="all",             # TMM: anchors from all classes' vectors
    relation_nepoch=50,        # relation network: 91 x 50 + 1 = 4,551 iterations
    relation_batchsize=256,    # (quirk: also the flow's batch)
    relation_lr=3e-4,
    relation_wd=3e-6,
    aug_lr=100.0,              # mining: SGD lr on the features
    aug_wd=0.0,
    aug_mt=0.0,
    loops_adv=30,              # mining: SGD steps per batch
    entropy_weight=20.0,
    mse_weight=1.0,            # quirk: passed by their script, unused by their code
    gen_nepoch=1000,           # 91 iterations each -> 91,000 iterations
    batchsize=256,
    num_coupling_layers=3,
    lr=3e-4,
    weight_decay=3e-6,
    lr_gamma=0.92,
    lr_step=17,                # their --step_size
    pi=0.15,
    prototype=10.0,
    nSample=50000,
    eval_start=60000,
    evl_interval=500,
    classifier_lr=5e-3,
    classifier_epochs=30,
    classifier_batch=1200,
    manualSeed=7848,           # their ZSL (T1) line: --manualSeed=4308
)

if __name__ == "__main__":
    main(config, tmm=TMM)
