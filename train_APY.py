"""GSMFlow on APY with the authors' settings: MM'21's, or with --variant=tmm the TMM
paper's (the TMM block). Edit the values here; override any with --key=value."""
from config import Config
from train import main

config = Config(
    dataset="APY",             # data/APY/res101.mat + att_splits.mat (xlsa17; extra keys are ignored)
    class_embedding="att",     # 64-d attributes
    anchors="all",             # APY takes its anchors from ALL classes' vectors
    gen_nepoch=600,            # 29 iterations each -> 17,400 iterations
    batchsize=200,
    num_coupling_layers=5,
    lr=3e-4,
    weight_decay=1e-6,
    lr_gamma=0.55,
    pi=0.02,
    prototype=3.0,
    nSample=9000,
    eval_start=5000,
    evl_interval=300,
    classifier_lr=1e-3,
    classifier_epochs=20,
    classifier_batch=1200,
    manualSeed=6152,
)

# GSMFlow-TMM (IEEE TMM), used with --variant=tmm (docs/tmm.md): the values of the authors'
# scripts/APY.sh in uqzhichen/GSMFlow_TMM (GZSL line), applied over the block above.
TMM = dict(
    anchors="all",             # TMM: anchors from all classes' vectors
    relation_nepoch=50,        # relation network: 29 x 50 + 1 = 1,451 iterations
    relation_batchsize=200,    # (quirk: also the flow's batch)
    relation_lr=1e-3,
    relation_wd=3e-6,
    aug_lr=30.0,               # mining: SGD lr on the features
    aug_wd=0.0,
    aug_mt=0.0,
    loops_adv=20,              # mining: SGD steps per batch
    entropy_weight=10.0,
    mse_weight=1.0,            # quirk: passed by their script, unused by their code
    gen_nepoch=600,            # 29 iterations each -> 17,400 iterations
    batchsize=200,
    num_coupling_layers=5,
    lr=3e-4,
    weight_decay=1e-5,
    lr_gamma=0.55,
    lr_step=20,                # their --step_size
    pi=0.02,
    prototype=3.0,
    nSample=9000,
    eval_start=5000,
    evl_interval=300,
    classifier_lr=1e-3,
    classifier_epochs=20,
    classifier_batch=1200,
    manualSeed=6152,           # their ZSL (T1) line: the same seed
)

if __name__ == "__main__":
    main(config, tmm=TMM)
