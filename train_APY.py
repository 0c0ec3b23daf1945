"""GSMFlow on APY with the authors' settings. Edit the values here; override any with --key=value."""
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

if __name__ == "__main__":
    main(config)
